"""The weights of a TorchScript archive (OpenAI's released CLIP ``.pt`` files), read without
running anything from it.

``torch.jit.load`` builds the archive's modules and runs their code, ``__setstate__`` included,
so a hostile file can write anywhere the user can. Here the archive is read as the zip it is:

* every member's size is checked before it is read (:func:`check_zip_members`): tensor data
  must be stored uncompressed, as ``torch.jit.save`` writes it, so a small file cannot claim
  gigabytes;
* ``data.pkl`` (the module tree) is unpickled by :class:`_ModuleTreeUnpickler`, which knows tensor
  rebuilding, ``OrderedDict`` and storage types, and turns every archive class into an inert
  record of its attributes; any other global is refused;
* which attributes are parameters and buffers is read from the classes' ``__parameters__`` and
  ``__buffers__`` lists in ``code/``, parsed with :mod:`ast` (never executed); a class with a
  ``__setstate__`` method, or whose state is not a plain attribute dict, is refused;
* each storage is read from ``data/KEY`` after checking its size against the pickle's claim.

The result is the state dict that TorchScript's own loader would give, without its risk.
"""
from __future__ import annotations

import ast
import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from tagclip_cls.runtime.errors import UserError

#: the largest module-tree pickle or code file read (OpenAI's ViT-L/14: about 0.1 MB each)
MAX_METADATA_BYTES = 64 * 2 ** 20
STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
#: list builders older TorchScript pickles use (``torch.jit._pickle``): each returns its argument
LIST_BUILDERS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_genericlist")


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a zip with a ``code/`` folder or ``constants.pkl``, as TorchScript archives are."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def check_zip_members(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse, before inflating anything, a checkpoint zip whose members could grow beyond what
    they are: torch stores tensor data uncompressed (a stored member is no larger than the file)
    and compresses only small metadata, so a compressed member over :data:`MAX_METADATA_BYTES`
    (a 2 GB storage of zeros deflates to a few MB) is refused."""
    size = path.stat().st_size
    for info in archive.infolist():
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size > size:
                raise UserError(f"{path}: member {info.filename} claims {info.file_size} bytes, more than the file")
        elif info.file_size > MAX_METADATA_BYTES:
            raise UserError(f"{path}: member {info.filename} would inflate to {info.file_size} bytes; torch never "
                            f"compresses tensor data, so it is refused")


def read_torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of the TorchScript archive at ``path``, by their dotted names."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_zip_members(path, archive)
            return _Archive(path, archive).state_dict()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserError(f"{path}: unreadable TorchScript archive ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class _StorageRef:
    """A storage the pickle names: read from ``data/KEY`` when a tensor uses it."""

    key: str
    dtype: torch.dtype
    numel: int


class _ArchiveObject:
    """An archive class's instance, reduced to its attributes: nothing of the archive runs."""

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ModuleTreeUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` with tensors as :class:`_StorageRef`-backed records and archive
    classes as :class:`_ArchiveObject` subclasses; any other global is refused."""

    def __init__(self, file, path: Path, load_storage):
        super().__init__(file)
        self.path = path
        self.load_storage = load_storage
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self.classes:
                self.classes[qualified] = type(name, (_ArchiveObject,), {"qualified_name": qualified})
            return self.classes[qualified]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch.jit._pickle" and name in LIST_BUILDERS:
            return lambda values: values
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
            return lambda value, type_name: value
        raise UserError(f"{self.path}: the archive asks for {module}.{name}, which plain weights never need; "
                        f"refusing to load it")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0):
            raise UserError(f"{self.path}: unexpected storage record in the archive")
        return _StorageRef(pid[2], pid[1], pid[4])

    def _rebuild_tensor(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple, requires_grad: bool,
                        hooks: Any, metadata: Any = None) -> torch.Tensor:
        if not isinstance(storage, _StorageRef) or hooks:
            raise UserError(f"{self.path}: unexpected tensor record in the archive")
        data = self.load_storage(storage)
        try:
            return torch.empty(0, dtype=storage.dtype).set_(data, offset, torch.Size(size), tuple(stride))
        except RuntimeError as exc:
            raise UserError(f"{self.path}: a tensor lies outside its storage ({exc})") from None


class _Archive:
    def __init__(self, path: Path, archive: zipfile.ZipFile):
        self.path = path
        self.archive = archive
        pickles = [n for n in archive.namelist() if PurePosixPath(n).name == "data.pkl" and n.count("/") == 1]
        if len(pickles) != 1:
            raise UserError(f"{path}: not a TorchScript archive (no single data.pkl)")
        self.prefix = pickles[0].split("/")[0]
        self.storages: dict[str, torch.UntypedStorage] = {}
        self.layouts: dict[str, tuple[list[str], list[str]]] = {}

    def _read_small(self, name: str) -> bytes:
        info = self.archive.getinfo(name)
        if info.file_size > MAX_METADATA_BYTES:
            raise UserError(f"{self.path}: {name} holds {info.file_size} bytes, more than an archive's metadata may")
        return self.archive.read(info)

    def _load_storage(self, ref: _StorageRef) -> torch.UntypedStorage:
        if ref.key not in self.storages:
            name = f"{self.prefix}/data/{ref.key}"
            nbytes = ref.numel * torch.empty(0, dtype=ref.dtype).element_size()
            try:
                info = self.archive.getinfo(name)
            except KeyError:
                raise UserError(f"{self.path}: storage {ref.key} is missing from the archive") from None
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != nbytes:
                raise UserError(f"{self.path}: storage {ref.key} holds {info.file_size} bytes "
                                f"({'stored' if info.compress_type == zipfile.ZIP_STORED else 'compressed'}), "
                                f"not the {nbytes} stored bytes its tensors need")
            buffer = torch.empty(nbytes, dtype=torch.uint8)
            with self.archive.open(info) as member:
                if nbytes and member.readinto(memoryview(buffer.numpy())) != nbytes:
                    raise UserError(f"{self.path}: storage {ref.key} is truncated")
            self.storages[ref.key] = buffer.untyped_storage()
        return self.storages[ref.key]

    def _layout(self, cls: type) -> tuple[list[str], list[str]]:
        """``(__parameters__, __buffers__)`` of an archive class, from its code file."""
        qualified = cls.qualified_name
        if qualified not in self.layouts:
            module, _, name = qualified.rpartition(".")
            source = f"{self.prefix}/code/{module.replace('.', '/')}.py"
            try:
                tree = ast.parse(self._read_small(source).decode("utf-8"))
            except (KeyError, SyntaxError, UnicodeDecodeError, ValueError):
                raise UserError(f"{self.path}: no readable code for class {qualified} in the archive") from None
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and node.name == name:
                    self.layouts[qualified] = _class_layout(node, self.path, qualified)
                    break
            else:
                raise UserError(f"{self.path}: class {qualified} is not defined in the archive's code")
        return self.layouts[qualified]

    def state_dict(self) -> dict[str, torch.Tensor]:
        unpickler = _ModuleTreeUnpickler(io.BytesIO(self._read_small(f"{self.prefix}/data.pkl")), self.path,
                                         self._load_storage)
        try:
            root = unpickler.load()
        except UserError:
            raise
        except Exception as exc:  # a malformed pickle: any of pickle's many error types
            raise UserError(f"{self.path}: unreadable module tree in the archive ({type(exc).__name__})") from None
        out: dict[str, torch.Tensor] = {}
        self._collect(root, "", out, depth=0)
        return out

    def _collect(self, module: Any, prefix: str, out: dict[str, torch.Tensor], depth: int) -> None:
        if not isinstance(module, _ArchiveObject):
            raise UserError(f"{self.path}: the archive's root is not a module")
        if depth > 64:
            raise UserError(f"{self.path}: modules nested deeper than 64 levels")
        parameters, buffers = self._layout(type(module))
        state = getattr(module, "state", None)
        if not isinstance(state, dict):
            raise UserError(f"{self.path}: {module.qualified_name} has custom state, which plain weights never have")
        for name in (*parameters, *buffers):
            value = state.get(name)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise UserError(f"{self.path}: {prefix}{name} is not a tensor")
            out[prefix + name] = value
        for name, value in state.items():
            if isinstance(value, _ArchiveObject):
                self._collect(value, f"{prefix}{name}.", out, depth + 1)


def _class_layout(node: ast.ClassDef, path: Path, qualified: str) -> tuple[list[str], list[str]]:
    lists: dict[str, list[str]] = {"__parameters__": [], "__buffers__": []}
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__setstate__":
            raise UserError(f"{path}: class {qualified} runs its own __setstate__ on load; refusing it")
        if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name) \
                and item.targets[0].id in lists:
            try:
                names = ast.literal_eval(item.value)
            except ValueError:
                names = None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UserError(f"{path}: class {qualified} has a malformed {item.targets[0].id}")
            lists[item.targets[0].id] = names
    return lists["__parameters__"], lists["__buffers__"]
