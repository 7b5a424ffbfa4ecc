"""The package's layer order holds: no module imports a higher layer, and no circle."""

from onnes.devtools import imports


def test_the_package_has_no_upward_import_and_no_circle():
    graph = imports.import_graph()
    assert "onnes.crystals" in graph and "onnes.errors" in graph["onnes.crystals"]
    assert imports.upward_imports(graph) == []
    assert imports.circles(graph) == []


def test_the_checks_catch_an_upward_import_and_a_circle():
    graph = {"onnes.crystals": {"onnes.config"}, "onnes.config": {"onnes.models.batch"},
             "onnes.models.batch": {"onnes.crystals"}, "onnes.io": set()}
    assert imports.upward_imports(graph) == ["onnes.crystals (layer 1) imports onnes.config (layer 3)"]
    assert imports.circles(graph) == [["onnes.config", "onnes.crystals", "onnes.models.batch"]]


def test_every_module_has_a_layer():
    for module in imports.import_graph():
        imports.layer_of(module)
