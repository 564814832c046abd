"""What an installed steer holds: every package of the source tree, and the default policies as
package data (the checkout's ``policies/`` folder, mapped to ``steer/policies``)."""

from __future__ import annotations

import tomllib

from helpers import REPO

from steer.pipeline.policy import load_policies, shipped_policies


def test_pyproject_lists_every_package_and_ships_the_policies_folder_as_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("steer", "retrieval")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert set(config["packages"]) == folders | {"steer.policies"}
    assert config["package-dir"] == {"steer.policies": "policies"}
    assert set(config["package-data"]["steer.policies"]) == {"*.yaml", "examples/*.yaml"}


def test_the_shipped_policies_are_the_checkouts_policies_folder_and_load() -> None:
    assert shipped_policies() == REPO / "policies"
    assert set(load_policies(shipped_policies(), multi_tenant=False)) == {"default", "passthrough"}
