"""The package list, for setuptools (everything else is in pyproject.toml).

The top-level ``recipes/`` and ``accelerate_configs/`` (where the README's commands point) install
inside the package as ``conj_train/recipes/`` and ``conj_train/accelerate_configs/``: a package-dir
mapping, so the files exist once in the repository. pyproject.toml alone cannot say it: its
``packages.find`` does not see a mapped folder, and listing every package by hand would miss new ones.
Each mapped sub-folder is named as a package too (setuptools warns about importable folders that are
shipped as data only). At run time ``conj_train.pipeline.recipes.shipped_dir`` finds the folders in
an installed wheel or, from a clone (editable install, ``PYTHONPATH``), at its top.
"""

from setuptools import find_namespace_packages, find_packages, setup

SHIPPED = {"conj_train.recipes": "recipes", "conj_train.accelerate_configs": "accelerate_configs"}
DATA = ["*.yaml", "*.md", "*.py", "*.sh"]

package_data: dict[str, list[str]] = {}
for name, folder in SHIPPED.items():
    for sub in ["", *find_namespace_packages(where=folder, exclude=["*__pycache__*"])]:
        package_data[f"{name}.{sub}" if sub else name] = DATA

setup(packages=[*find_packages(include=["conj_train*"]), *package_data], package_dir=SHIPPED,
      package_data=package_data)
