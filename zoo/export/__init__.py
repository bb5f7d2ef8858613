"""Export to ONNX and TorchScript, and run the exported files (``zoo export``, ``Model.export``).

- :func:`export_model`: a model to a file (:mod:`zoo.export.exporter`);
- :class:`OnnxModel`, :class:`TorchScriptModel`, :func:`load_exported`: run one (:mod:`zoo.export.runtime`);
- :class:`ExportMetadata`: what the file says about itself (:mod:`zoo.export.metadata`);
- :class:`ExportedModule`: a loaded file behind the Model interface, so ``zoo predict`` / ``val`` /
  ``benchmark`` run it through the PyTorch model's code (:mod:`zoo.export.module`).

Sits at the model layer: it imports ``zoo.nn`` / ``zoo.data`` / ``zoo.inference``, never ``zoo.model``
(which imports it for ``Model.export``), the engine or the commands. onnx, onnxruntime and
onnxscript are optional (``pip install -e ".[export]"``) and imported only when used.
"""
from zoo.export.exporter import default_export_path, export_model
from zoo.export.metadata import ExportMetadata
from zoo.export.module import EXPORTED_SUFFIXES, ExportedModule, is_exported_file
from zoo.export.options import EXPORT_FORMATS, ExportError, MissingDependency
from zoo.export.runtime import ExportedModel, OnnxModel, TorchScriptModel, load_exported

__all__ = ["export_model", "default_export_path", "ExportMetadata", "EXPORT_FORMATS", "ExportError",
           "MissingDependency", "ExportedModel", "OnnxModel", "TorchScriptModel", "load_exported",
           "EXPORTED_SUFFIXES", "ExportedModule", "is_exported_file"]
