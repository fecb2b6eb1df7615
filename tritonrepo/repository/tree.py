"""Walk a repository folder without following symbolic links: what the manifest lists and what push uploads."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

SKIPPED_FOLDERS = ("__pycache__",)


@dataclass(frozen=True)
class Link:
    """A symbolic link met on the walk; never followed into (so a loop such as `loop -> ..` cannot recur)."""

    path: str  # relative to the root, with '/'
    target: str  # what the link says, as written
    resolved: str  # the absolute path it leads to, every link on the way resolved
    kind: str  # "file", "folder" or "broken"
    inside: bool  # whether `resolved` lies inside the root

    @property
    def uploaded(self) -> bool:
        """A link to a file inside the repository is repository content: it moves as that content (S3 has no links)."""
        return self.kind == "file" and self.inside

    @property
    def leads_outside(self) -> bool:
        return self.kind != "broken" and not self.inside

    def describe(self) -> str:
        return f"{self.path} -> {self.target}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Tree:
    files: list[str] = field(default_factory=list)  # regular files and links to files inside the root, sorted
    links: list[Link] = field(default_factory=list)  # every link, sorted by path
    empty_folders: list[str] = field(default_factory=list)  # real folders holding none of `files` nor a real folder

    @property
    def outside_links(self) -> list[Link]:
        return [link for link in self.links if link.leads_outside]

    @property
    def skipped_links(self) -> list[Link]:
        """Links inside the root that are not content: folder links (their folder is walked under its real path) and
        broken links."""
        return [link for link in self.links if not link.uploaded and not link.leads_outside]


def _path_order(relative: str) -> list[str]:
    return relative.split("/")  # the order Path sorting gives


def walk(root: Path) -> Tree:
    """Every entry under root, __pycache__ aside; folder links are listed, never entered."""
    root = Path(root)
    real_root = os.path.realpath(root)
    tree = Tree()
    # os.walk, not rglob: it skips __pycache__ without entering it and costs one stat per entry, which is what keeps
    # a no-op push of thousands of files well under a second. followlinks=False: a folder link stays an entry.
    for folder, subfolders, names in os.walk(root, followlinks=False):
        base = Path(folder)
        relative_base = base.relative_to(root).as_posix()
        prefix = "" if relative_base == "." else f"{relative_base}/"
        # os.walk lists folder links among the subfolders: they are entries here, never folders to descend into.
        links = [name for name in subfolders if os.path.islink(base / name)]
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS and name not in links]
        content = bool(subfolders)
        for name in names:
            path = base / name
            if os.path.islink(path):
                links.append(name)
            elif path.is_file():  # sockets, fifos and devices are not repository content
                tree.files.append(prefix + name)
                content = True
        for name in links:
            link = _link(base / name, prefix + name, real_root)
            tree.links.append(link)
            if link.uploaded:
                tree.files.append(link.path)
                content = True
        if not content and prefix:
            tree.empty_folders.append(relative_base)
    tree.files.sort(key=_path_order)
    tree.links.sort(key=lambda link: _path_order(link.path))
    tree.empty_folders.sort(key=_path_order)
    return tree


def _link(path: Path, relative: str, real_root: str) -> Link:
    resolved = os.path.realpath(path)
    if os.path.isdir(resolved):
        kind = "folder"
    elif os.path.exists(resolved):
        kind = "file"
    else:
        kind = "broken"
    inside = os.path.commonpath([real_root, resolved]) == real_root
    return Link(relative, os.readlink(path), resolved, kind, inside)
