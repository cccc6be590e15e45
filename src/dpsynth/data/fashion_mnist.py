"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; https://github.com/zalandoresearch/fashion-mnist).

Same IDX format and sizes as MNIST (60,000 train / 10,000 test 28x28 grey images of 10
clothing classes). Searched in ``root/``, torchvision's ``root/FashionMNIST/raw/``,
``root/fashion_mnist/``, ``root/fashion-mnist/`` and, with no configuration, the system
folders of :data:`SYSTEM_FOLDERS` (Debian's ``dataset-fashion-mnist`` package installs the
files in ``/usr/share/datasets/fashion-mnist/``).
"""

from __future__ import annotations

from dpsynth.data._common import expand_root
from dpsynth.data.base import Dataset
from dpsynth.data.mnist import load_idx_dataset, root_folders
from dpsynth.errors import ConfigError

#: System-wide copies searched after ``root``; a module constant so tests can replace it.
SYSTEM_FOLDERS: list[str] = ["/usr/share/datasets/fashion-mnist"]

#: Official class names, label order (from the dataset's README).
FASHION_MNIST_CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Every class has the same count, by construction and as published: 6,000 training and 1,000
#: test images per class (Xiao, Rasul, Vollgraf 2017, section 2, and the dataset's README), so
#: the uniform class proportions are public and need no release.
FASHION_MNIST_BALANCED = True


def load_fashion_mnist(root: str, download: bool = False) -> Dataset:
    """Load Fashion-MNIST: 60,000 train / 10,000 test images, shape (1, 28, 28), in [0, 1].

    Args:
        root: folder holding the IDX files, directly, as ``root/FashionMNIST/raw/`` or as
            ``root/fashion_mnist/``; may be empty when a system copy exists.
        download: if the files are missing, fetch them into ``root`` with torchvision.

    Raises:
        DataError: files missing, corrupted, inconsistent, or the download failed.
        ConfigError: ``download`` is requested without a ``root``.
    """
    root = expand_root(root)
    if download and not root:
        raise ConfigError(
            "dataset.root is empty but download: true needs a folder to download Fashion-MNIST "
            "into; set dataset.root=/path/to/data (or data_dir=...)."
        )
    how_to = (
        "To obtain them: set download: true (needs internet; torchvision saves them under "
        "<root>/FashionMNIST/raw/), or on Debian/Ubuntu run "
        "`apt-get install dataset-fashion-mnist` (installs them in "
        "/usr/share/datasets/fashion-mnist/, found with no configuration), or copy the four "
        "files from https://github.com/zalandoresearch/fashion-mnist into a folder and set "
        "dataset.root=/that/folder (or data_dir=...)."
    )

    def fetch() -> None:
        from torchvision import datasets

        datasets.FashionMNIST(root, train=True, download=True)

    return load_idx_dataset(
        "fashion_mnist",
        [*root_folders(root, "FashionMNIST", "fashion_mnist", "fashion-mnist"), *SYSTEM_FOLDERS],
        FASHION_MNIST_CLASS_NAMES,
        how_to,
        balanced=FASHION_MNIST_BALANCED,
        download=fetch if download else None,
    )
