"""What pyproject.toml cannot state: packages built from folders of another name.

The top-level ``data/`` ships as the package data ``tagclip_cls/data`` and ``configs/`` as
``tagclip_cls/configs`` (both read through :mod:`tagclip_cls.runtime.resources`), and ``tools/``
as the package ``tagclip_wsss_tools``, whose ``main`` functions are pyproject.toml's console
scripts; a checkout keeps all three where they are.
"""
from setuptools import find_namespace_packages, find_packages, setup

DATA_PACKAGE, CONFIG_PACKAGE = "tagclip_cls.data", "tagclip_cls.configs"
MAPPED = {DATA_PACKAGE: "data", CONFIG_PACKAGE: "configs", "tagclip_wsss_tools": "tools"}
DATA_FOLDERS = ("presets", "templates", "published", "splits")  # the project's own: data/ also holds datasets
DATA_FILES = ["*.json", "*.txt"]

# each data folder is a namespace package of the data package (itself in MAPPED), as setuptools
# wants package data laid out; the top of data/ (the datasets' own files) ships nothing
data_packages = [f"{DATA_PACKAGE}.{name}" for name in find_namespace_packages(
    "data", include=[pattern for folder in DATA_FOLDERS for pattern in (folder, f"{folder}.*")])]

# the configs (and their _base_ files) are read by path: every folder ships its .py files
config_packages = [f"{CONFIG_PACKAGE}.{name}" for name in find_namespace_packages("configs")]

setup(packages=find_packages(include=["tagclip_cls", "tagclip_cls.*", "wsss", "wsss.*"]) + list(MAPPED) + data_packages
      + config_packages,
      package_dir=MAPPED,
      package_data={package: DATA_FILES for package in data_packages})
