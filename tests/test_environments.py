"""The conda environments of the rules agree with pyproject.toml: the same bounds for every
package both name, the base dependencies in every environment, each rule family's extra
in its environment, and a post-deploy script that installs the package."""

import re
import tomllib

import pytest
import yaml
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# conda-forge names that differ from the PyPI names pyproject.toml uses.
CONDA_TO_PYPI = {"pytorch": "torch"}
# Each environment carries this extra of the package.
ENV_EXTRAS = {"analysis": "analysis", "torch": "ml", "dft": "dft"}


def pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {r.name: r for r in map(Requirement, project["dependencies"])}
    extras = {name: {r.name: r for r in map(Requirement, items) if r.name != "onnes"}
              for name, items in project["optional-dependencies"].items()}
    return base, extras


def environment(name):
    spec = yaml.safe_load((REPO / f"envs/{name}.yaml").read_text())
    requirements = {}
    for item in spec["dependencies"]:
        for text in item["pip"] if isinstance(item, dict) else [item]:
            if re.match(r"^(python|pip)\b", text):
                continue
            conda_name, bound = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", text).groups()
            requirement = Requirement(CONDA_TO_PYPI.get(conda_name, conda_name) + bound)
            requirements[requirement.name] = requirement
    return spec, requirements


@pytest.mark.parametrize("name", sorted(ENV_EXTRAS))
def test_environment_agrees_with_pyproject(name):
    base, extras = pyproject()
    declared = dict(base)
    for packages in extras.values():
        declared.update(packages)
    spec, requirements = environment(name)
    assert "pytorch" not in spec["channels"], "the pytorch channel stopped at 2.5; use conda-forge"
    for package, requirement in requirements.items():
        if package in declared:
            assert requirement.specifier == declared[package].specifier, (name, package)
    missing = (set(base) | set(extras[ENV_EXTRAS[name]])) - set(requirements)
    assert not missing, f"envs/{name}.yaml lacks {sorted(missing)}"
    assert (REPO / f"envs/{name}.post-deploy.sh").is_file()


def test_every_rule_environment_exists():
    named = set()
    for rules in (REPO / "rules").glob("*.smk"):
        named |= set(re.findall(r'"\.\./envs/(\w+)\.yaml"', rules.read_text()))
    assert named == set(ENV_EXTRAS)


def test_the_constraints_file_pins_what_pyproject_allows():
    """constraints.txt (what CI installs) pins every dependency, within pyproject's bounds."""
    base, extras = pyproject()
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
    for packages in (base, *extras.values()):
        for name, requirement in packages.items():
            if name == "torch":  # installed by the command itself (the on-disk CPU build)
                continue
            pin = pins.get(canonicalize_name(name))
            assert pin is not None, f"constraints.txt does not pin {name}"
            assert requirement.specifier.contains(pin, prereleases=True), (name, pin)


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    command = re.search(r"## Tests\n\n```bash\n(.+)\n```", readme).group(1)
    assert command in (REPO / ".ci/run").read_text().splitlines()
