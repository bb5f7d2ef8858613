"""Registry: decorator registration, duplicates, suggestions, torch.nn lookup, plugins."""
from __future__ import annotations

import textwrap

import pytest
import torch.nn as nn

import zoo.nn  # noqa: F401
from zoo import ConfigError, Model
from zoo.registry import MODULES, Registry, load_entry_point_plugins
from zoo.wiring import in_out


def test_duplicate_name_raises():
    reg = Registry("test")

    @reg.register()
    class Block(nn.Module):
        pass

    with pytest.raises(KeyError, match="already registered"):

        @reg.register(name="Block")
        class Other(nn.Module):
            pass


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ConfigError, match=r"unknown module 'C2ff'; did you mean 'C2f'"):
        MODULES.get("C2ff")


def test_torch_nn_names_resolve_without_registration():
    entry = MODULES.get("nn.Upsample")
    assert entry.cls is nn.Upsample and entry.registered_by == "torch.nn"
    assert MODULES.get("nn.BatchNorm2d").wiring.describe == "(c1)"


def test_zoo_modules_are_registered_with_their_source():
    for name in ["Conv", "C2f", "SCDown", "C2fCIB", "PSA", "SPPF", "v10Detect", "Concat", "Index"]:
        assert MODULES.get(name).registered_by == "zoo"


PLUGIN = textwrap.dedent('''
    import torch.nn as nn
    from zoo import register
    from zoo.wiring import in_out

    @register(wiring=in_out())
    class {name}(nn.Module):
        """A user block: 3x3 conv then ReLU."""
        def __init__(self, c1, c2, k=3):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, padding=k // 2)
            self.act = nn.ReLU()
        def forward(self, x):
            return self.act(self.conv(x))
''')


def _write_plugin(tmp_path, name):
    path = tmp_path / f"{name.lower()}_plugin.py"
    path.write_text(PLUGIN.format(name=name))
    return path


def test_plugin_named_in_yaml_registers_a_block(tmp_path):
    _write_plugin(tmp_path, "YamlPluginBlock")
    cfg = tmp_path / "net.yaml"
    cfg.write_text(textwrap.dedent("""
        plugins: [yamlpluginblock_plugin.py]
        backbone:
          - [-1, 1, YamlPluginBlock, [24]]
          - [-1, 1, nn.AdaptiveAvgPool2d, [1]]
    """))
    model = Model(cfg)
    assert model.records[0].out_channels == 24
    assert MODULES.get("YamlPluginBlock").registered_by == "yamlpluginblock_plugin.py"


def test_plugin_on_the_command_line(tmp_path, capsys):
    from zoo.cli import main

    path = _write_plugin(tmp_path, "CliPluginBlock")
    cfg = tmp_path / "net.yaml"
    cfg.write_text("backbone:\n  - [-1, 1, CliPluginBlock, [16]]\n")
    assert main(["info", str(cfg), "--imgsz", "64", "--plugin", str(path)]) == 0
    assert "CliPluginBlock" in capsys.readouterr().out
    assert main(["list", "--plugin", str(path)]) == 0
    assert "CliPluginBlock" in capsys.readouterr().out


def test_entry_point_plugins_are_imported(monkeypatch, tmp_path):
    imported = []

    class FakeEntryPoint:
        name, value = "demo", "demo_pkg"

        def load(self):
            @MODULES.register(wiring=in_out())
            class EntryPointBlock(nn.Conv2d):
                pass

            imported.append(EntryPointBlock)

    monkeypatch.setattr("zoo.registry.entry_points", lambda group: [FakeEntryPoint()])
    load_entry_point_plugins(rescan=True)  # earlier builds in this process already scanned once
    load_entry_point_plugins(rescan=True)  # a second scan must not import (and register) it again
    load_entry_point_plugins()
    assert len(imported) == 1
    assert MODULES.get("EntryPointBlock").registered_by == "demo (entry point)"


def test_missing_plugin_is_a_clear_error(tmp_path):
    from zoo.cli import main

    cfg = tmp_path / "net.yaml"
    cfg.write_text("backbone:\n  - [-1, 1, Conv, [16]]\n")
    assert main(["info", str(cfg), "--plugin", str(tmp_path / "nope.py")]) == 2
