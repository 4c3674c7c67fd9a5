"""File readers: 2D images and masks, HDF5 / npz arrays with their spacing (NIfTI: :mod:`medseg.data.nifti`).

Every reader turns a failure into a one-line :class:`~medseg.errors.DataError` that
names the file and the problem. Arrays come back as ``[H, W, C]`` images and
``[H, W]`` masks (2D) or ``[D, H, W, C]`` / ``[D, H, W]`` (3D).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARRAY_EXTS = (".h5", ".hdf5", ".npz")
NIFTI_EXTS = (".nii.gz", ".nii")


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (library messages may hold newlines; ours are one line)."""
    return " ".join(str(exc).split())


def file_id(path: Path) -> str:
    """Case id of a file: its name without the (possibly double) extension."""
    name = path.name
    for ext in (".npy.h5", ".nii.gz", *NIFTI_EXTS, *ARRAY_EXTS, *IMAGE_EXTS):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own warning limit (0.25 GiB of 24-bit pixels)


def max_pixels() -> int:
    """Largest image (H x W pixels) a reader decodes: ``MEDSEG_MAX_PIXELS`` or 89.5 Mpx.

    Checked from the file header before anything is decoded, so a decompression bomb (a small
    file that declares a huge image) costs nothing."""
    raw = os.environ.get("MEDSEG_MAX_PIXELS", "")
    try:
        value = int(float(raw)) if raw.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise DataError(f"MEDSEG_MAX_PIXELS={raw!r}: expected a number of pixels") from None
    if value < 1:
        raise DataError(f"MEDSEG_MAX_PIXELS={raw!r}: expected a positive number of pixels")
    return value


def check_pixels(path: Path, height: int, width: int, what: str) -> None:
    cap = max_pixels()
    if height * width > cap:
        raise DataError(
            f"{path}: {what} declares {width} x {height} = {height * width / 1e6:.1f} Mpx, more than "
            f"the limit of {cap / 1e6:.1f} Mpx (a decompression bomb?); raise MEDSEG_MAX_PIXELS to read it"
        )


def _open_checked(path: Path, what: str) -> Any:
    """``Image.open`` with the pixel cap checked from the header; PNG chunk CRCs verified first
    (Pillow's decoder does not check the CRC of image data, so a damaged PNG decodes wrongly)."""
    from PIL import Image  # Pillow: loaded only when 2D images are read

    pillow_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # our cap, checked below from the same header, replaces Pillow's
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as e:  # not expected with the limit lifted; never a traceback
        raise DataError(f"{path}: {what} is larger than the pixel limit ({one_line(e)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    try:
        check_pixels(path, im.height, im.width, what)
        if im.format == "PNG":
            im.verify()  # reads every chunk and checks its CRC; the image must then be reopened
            im.close()
            im = Image.open(path)
    except BaseException:
        im.close()
        raise
    return im


def _pil_array(path: Path, what: str) -> np.ndarray:
    from PIL import UnidentifiedImageError  # Pillow: loaded only when 2D images are read

    try:
        with _open_checked(path, what) as im:
            im.load()
            if im.mode == "1":
                im = im.convert("L")
            elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and what == "image"):
                im = im.convert("RGB" if im.mode != "LA" else "L")
            elif im.mode in ("CMYK", "YCbCr", "HSV", "LAB"):
                im = im.convert("RGB")
            elif im.mode.startswith("I;16") or im.mode == "I":
                return np.asarray(im).astype(np.int32)
            return np.asarray(im).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable {what} (unknown or corrupt image format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read {what} (truncated or corrupt file: {one_line(e)})") from None


def _tiff_array(path: Path, what: str) -> np.ndarray:
    import tifffile  # tifffile: loaded only when TIFF images are read

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            check_pixels(path, int(page.imagelength), int(page.imagewidth), what)
            arr = tif.asarray()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except Exception as e:  # tifffile raises many types for corrupt files
        raise DataError(f"{path}: cannot read {what} (truncated or corrupt TIFF: {one_line(e)})") from None
    arr = np.asarray(arr)
    # planar (C, H, W) TIFFs with few channels -> (H, W, C)
    if arr.ndim == 3 and arr.shape[0] <= 4 < min(arr.shape[1:]):
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _tiff_or_pil(path: Path, what: str) -> np.ndarray:
    """tifffile reads most TIFFs; Pillow decodes LZW/deflate ones when the imagecodecs package is missing."""
    try:
        return _tiff_array(path, what)
    except DataError as first:
        try:
            return _pil_array(path, what)
        except DataError:
            raise first from None


def read_image_2d(path: Path) -> np.ndarray:
    """Read a PNG/JPG/BMP/TIFF image as ``[H, W, C]`` in its native dtype."""
    path = Path(path)
    arr = (
        _tiff_or_pil(path, "image") if path.suffix.lower() in (".tif", ".tiff") else _pil_array(path, "image")
    )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise DataError(f"{path}: expected a 2D grey or colour image, got an array of shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    check_finite(arr, path)
    return arr


def read_mask_2d(path: Path, what: str = "mask") -> np.ndarray:
    """Read a label image as ``[H, W]`` raw values; colour masks must be grey (R = G = B)."""
    path = Path(path)
    arr = _tiff_or_pil(path, what) if path.suffix.lower() in (".tif", ".tiff") else _pil_array(path, what)
    if arr.ndim == 3:
        if arr.shape[2] == 1 or all(np.array_equal(arr[..., 0], arr[..., c]) for c in range(1, arr.shape[2])):
            arr = arr[..., 0]
        else:
            raise DataError(
                f"{path}: {what} has {arr.shape[2]} different colour channels; expected a "
                f"single-channel label image (or R = G = B)"
            )
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2D {what}, got an array of shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    check_finite(arr, path)
    return arr


def check_finite(arr: np.ndarray, path: Path | str) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        n = int(arr.size - np.isfinite(arr).sum())
        raise DataError(f"{path}: contains {n} NaN or infinite values")


# --------------------------------------------------------------------------- HDF5 / npz


def _match_image_to_label(image: np.ndarray, label_shape: tuple[int, ...] | None, path: Path) -> np.ndarray:
    """Return the image as ``[..., C]`` with spatial shape equal to the label's."""
    if label_shape is None:  # unlabelled: [H, W], [H, W, C<=4] slice, or [D, H, W] volume
        return image if image.ndim == 3 and image.shape[-1] <= 4 else image[..., None]
    if image.shape == label_shape:
        return image[..., None]
    if image.shape[:-1] == label_shape and image.ndim == len(label_shape) + 1:
        return image
    if image.shape[1:] == label_shape and image.ndim == len(label_shape) + 1:
        return np.moveaxis(image, 0, -1)
    raise DataError(f"{path}: image shape {image.shape} does not match label shape {label_shape}")


def array_shape(path: Path) -> tuple[tuple[int, ...], bool]:
    """Spatial shape of an HDF5/npz case (from the label, or the image) and whether it has a label."""
    keys = _keys(path)
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path) as z:
                if keys[1] is not None:
                    return tuple(z[keys[1]].shape), True
                return tuple(z[keys[0]].shape), False
        import h5py  # h5py: heavy import, loaded only for HDF5 cases

        with h5py.File(path, "r") as f:
            if keys[1] is not None:
                return tuple(f[keys[1]].shape), True
            return tuple(f[keys[0]].shape), False
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from None


def _keys(path: Path) -> tuple[str, str | None]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path) as z:
                names = list(z.files)
        else:
            import h5py  # h5py: heavy import, loaded only for HDF5 cases

            with h5py.File(path, "r") as f:
                names = list(f.keys())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as e:
        raise DataError(f"{path}: cannot open (truncated or not an HDF5/npz file: {one_line(e)})") from None
    img = next((k for k in ("image", "img", "data") if k in names), None)
    if img is None:
        raise DataError(f"{path}: no 'image' array (found: {', '.join(map(str, names)) or 'nothing'})")
    lab = next((k for k in ("label", "mask", "seg", "gt") if k in names), None)
    return img, lab


def _h5_spacing(f: Any, img_key: str) -> Any:
    """``spacing`` of an HDF5 case: a file attribute, an attribute of the image, or a dataset."""
    if "spacing" in f.attrs:
        return f.attrs["spacing"]
    if "spacing" in f[img_key].attrs:
        return f[img_key].attrs["spacing"]
    return f["spacing"][()] if "spacing" in f else None


def _checked_spacing(value: Any, ndim: int, path: Path) -> tuple[float, ...] | None:
    """A ``spacing`` value as floats, one per spatial axis in array order, positive and finite."""
    if value is None:
        return None
    try:
        sp = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'spacing' is not a list of numbers ({value!r})") from None
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise DataError(
            f"{path}: 'spacing' must hold {ndim} positive numbers (one per array axis), got {sp.tolist()}"
        )
    return tuple(float(v) for v in sp)


def _read_arrays(path: Path, img_key: str, lab_key: str | None) -> tuple[np.ndarray, np.ndarray | None, Any]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path) as z:
                image = np.asarray(z[img_key])
                label = None if lab_key is None else np.asarray(z[lab_key])
                spacing = np.asarray(z["spacing"]) if "spacing" in z.files else None
        else:
            import h5py  # h5py: heavy import, loaded only for HDF5 cases

            with h5py.File(path, "r") as f:
                image = np.asarray(f[img_key][()])
                label = None if lab_key is None else np.asarray(f[lab_key][()])
                spacing = _h5_spacing(f, img_key)
    except Exception as e:
        raise DataError(f"{path}: cannot read arrays (truncated or corrupt file: {one_line(e)})") from None
    return image, label, spacing


def _check_array(arr: np.ndarray, path: Path, what: str) -> None:
    """Real numbers, and at least 2 x 2 pixels: a (0, 32) or (1, 32) array is no image."""
    if np.iscomplexobj(arr):
        raise DataError(f"{path}: {what} holds complex values; store a real array (e.g. the magnitude)")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: {what} has dtype {arr.dtype}; expected numbers")
    if arr.size == 0:
        raise DataError(f"{path}: {what} of shape {arr.shape} is empty; images need at least 2 x 2 pixels")


def _check_plane(shape: tuple[int, ...], path: Path, what: str) -> None:
    """The last two spatial axes (H, W) of ``shape`` hold at least 2 pixels each."""
    if len(shape) < 2 or min(shape[-2:]) < 2:
        raise DataError(f"{path}: {what} of shape {shape} is too small; images need at least 2 x 2 pixels")


def read_array_case(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...] | None]:
    """Read an SSL4MIS/TransUNet HDF5 or Synapse npz case: ``image`` (+ ``label``, + ``spacing``).

    Returns image ``[H, W, C]`` (2D) or ``[D, H, W, C]`` (3D), label ``[H, W]`` / ``[D, H, W]`` or
    None, and the voxel spacing in array-axis order when the file has one: an HDF5 ``spacing``
    attribute (of the file or of the image) or dataset, or an npz ``spacing`` array; else None.
    """
    path = Path(path)
    img_key, lab_key = _keys(path)
    image, label, raw_spacing = _read_arrays(path, img_key, lab_key)
    _check_array(image, path, "image")
    if label is not None:
        _check_array(label, path, "label")
    if label is not None and label.ndim not in (2, 3):
        raise DataError(f"{path}: label must be 2D (slice) or 3D (volume), got shape {label.shape}")
    if label is None and image.ndim not in (2, 3):
        raise DataError(f"{path}: image must be 2D (slice) or 3D (volume), got shape {image.shape}")
    image = _match_image_to_label(image, None if label is None else label.shape, path)
    _check_plane(image.shape[:-1], path, "image")
    if label is not None:
        _check_plane(label.shape, path, "label")
    check_finite(image, path)
    if label is not None:
        check_finite(label, path)
    return image, label, _checked_spacing(raw_spacing, image.ndim - 1, path)
