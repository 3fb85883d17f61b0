"""What pyproject.toml cannot state: packages built from folders of another name.

The top-level ``data/`` ships as the package data ``tagclip_cls/data`` (read through
:mod:`tagclip_cls.runtime.resources`) and ``tools/`` as the package ``tagclip_wsss_tools``, whose
``main`` functions are pyproject.toml's console scripts; a checkout keeps both where they are.
"""
from setuptools import find_namespace_packages, find_packages, setup

DATA_PACKAGE = "tagclip_cls.data"
MAPPED = {DATA_PACKAGE: "data", "tagclip_wsss_tools": "tools"}
DATA_FOLDERS = ("presets", "templates", "published", "splits")  # the project's own: data/ also holds datasets
DATA_FILES = ["*.json", "*.txt"]

# each data folder is a namespace package of the data package, as setuptools wants package data laid out
data_packages = [DATA_PACKAGE] + [f"{DATA_PACKAGE}.{name}" for name in find_namespace_packages(
    "data", include=[pattern for folder in DATA_FOLDERS for pattern in (folder, f"{folder}.*")])]

setup(packages=find_packages(include=["tagclip_cls", "tagclip_cls.*", "wsss", "wsss.*"]) + list(MAPPED) + data_packages,
      package_dir=MAPPED,
      package_data={package: DATA_FILES for package in data_packages})
