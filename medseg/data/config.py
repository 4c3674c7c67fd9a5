"""Typed data and augmentation options (pydantic v2, unknown keys rejected).

``medseg.config`` embeds :class:`DataConfig` and :class:`AugmentConfig`; every field
carries a description because ``--help`` and the docs print them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medseg.constants import IGNORE_INDEX


class SplitConfig(BaseModel):
    """How cases are split when the dataset has no split files."""

    model_config = ConfigDict(extra="forbid")

    val_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Fraction of the training cases held out for validation (also carved from "
        "train.txt when no val.txt exists; 0 keeps all of them for training).",
    )
    test_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of the cases held out for testing (ignored when split files exist).",
    )
    seed: int = Field(0, description="Seed of the split shuffle (independent of the training seed).")
    folds: int | None = Field(
        None,
        ge=2,
        description="K-fold cross-validation: the non-test cases are cut into K folds (whole "
        "patients/volumes, stratified by the classes present) and fold `fold` validates; "
        "val_fraction is then unused. An nnU-Net splits_final.json in the data folder defines "
        "the folds instead. null: one train/val split.",
    )
    fold: int = Field(0, ge=0, description="The validation fold, 0..folds-1 (with `folds`).")
    file: Path | None = Field(
        None,
        description="A run's splits.json to reuse exactly (its train/val/test ids; with `folds`, "
        "its cross-validation table and fold `fold`). `medseg train` sets it when the run folder "
        "already holds one, so a rerun trains on the same cases.",
    )
    stratify: bool = Field(
        True,
        description="With `folds`: balance the folds by the set of classes each patient/volume "
        "holds (e.g. lesion present or not); false assigns groups at random.",
    )

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("split.val_fraction + split.test_fraction must be < 1")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"split.fold must be in 0..{self.folds - 1} (split.folds = {self.folds})")
        return self


class SyntheticConfig(BaseModel):
    """The built-in phantom data set (``format: synthetic``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["binary", "multiclass"] = Field(
        "binary",
        description="binary: textured lesion blobs on skin-like texture (RGB); "
        "multiclass: overlapping organ ellipses with noise and bias field (grey, 4 classes).",
    )
    n: int = Field(96, ge=3, description="Number of generated images.")
    size: int = Field(96, ge=16, description="Side length of the generated square images, in pixels.")
    seed: int = Field(0, description="Seed of the phantom generator.")


class DataConfig(BaseModel):
    """Where the data is, how it is read, split, normalised and sized for training."""

    model_config = ConfigDict(extra="forbid")

    root: Path | None = Field(
        None,
        description="Dataset folder (images/ + masks/; slices/ + volumes/ of HDF5; train_npz/ + "
        "test_vol_h5/; imagesTr/ + labelsTr/ of NIfTI) or a single file. Not needed for "
        "format 'synthetic'.",
    )
    format: Literal["auto", "folder", "h5", "npz", "nifti", "itk", "synthetic"] = Field(
        "auto",
        description="Dataset layout; 'auto' detects it from the files under root ('itk': NRRD, "
        "MHA/MHD or DICOM series volumes, read with SimpleITK).",
    )
    slice_axis: Literal["auto", "axial", "coronal", "sagittal"] = Field(
        "auto",
        description="Volumes: the plane 2D models slice in, i.e. the first axis of each case after "
        "reorienting to RAS; 'auto' takes the axis of largest spacing (ties: the first RAS axis).",
    )
    target_spacing: tuple[float | None, float | None, float | None] | None = Field(
        None,
        description="Volumes with a geometry: resample every case to this spacing (mm, slice axis "
        "first); predictions are resampled back to each input's own grid. None keeps each file's; "
        "null for one axis keeps each file's spacing along it (2-D plans keep the slice axis).",
    )
    images_dir: str = Field("images", description="Folder of images, relative to root (folder format).")
    masks_dir: str = Field("masks", description="Folder of masks, relative to root (folder format).")
    mask_suffix: str = Field(
        "",
        description="Suffix of mask file stems, e.g. '_segmentation' when masks/ISIC_1_segmentation.png "
        "belongs to images/ISIC_1.jpg. Volumes without a labelsTr/ folder: the suffix of a label "
        "stored next to its image ('' means '_gt', ACDC's patient001_frame01_gt.nii.gz).",
    )
    roi_dir: str | None = Field(
        "auto",
        description="Folder of region-of-interest masks (non-zero = inside), e.g. DRIVE 'fov'. "
        "'auto' uses fov/ or roi/ when present; null disables.",
    )
    mask_values: dict[int, int] | None = Field(
        None,
        description="Raw mask value -> class index, e.g. {0: 0, 255: 1}. Class 255 marks ignored "
        "pixels. Default (null): {0: 0, 255: 1} for 0/255 masks, identity for small "
        "integer labels.",
    )
    mask_threshold: float | None = Field(
        None,
        description="Binarise masks as raw >= threshold (e.g. 128 for JPEG-noisy masks); "
        "excludes mask_values.",
    )
    class_names: list[str] | None = Field(
        None,
        description="Class names including background; default from classes.txt / dataset.json, "
        "else background, class1, ...",
    )
    regions: dict[str, list[int]] | None = Field(
        None,
        description="Region-based (multilabel) training for nested labels, e.g. {whole: [1, 2, 3], "
        "core: [2, 3], enhancing: [3]}: one sigmoid output per region, metrics per region; "
        "nested regions from the largest to the smallest (later ones paint over earlier ones "
        "when predictions go back to a label map). Implies loss.mode multilabel.",
    )
    num_classes: int | None = Field(
        None,
        ge=2,
        description="Number of classes including background (binary = 2); checked against "
        "the data when given.",
    )
    in_channels: int | None = Field(
        None,
        ge=1,
        description="Channels fed to the model; grey images are replicated to 3 and RGB "
        "converted to grey when set. Default: the channel count of the data.",
    )
    size: tuple[int, int] = Field(
        (256, 256),
        description="Training sample size [H, W] in pixels (default 256x256; for format "
        "'synthetic' the phantom size).",
    )
    resize_policy: Literal["resize", "pad", "crop"] = Field(
        "resize",
        description="How training samples reach `size`: 'resize' stretches the whole image, "
        "'pad' scales keeping the aspect ratio and pads, 'crop' takes random crops at "
        "native resolution (large images such as DRIVE or EM). Evaluation uses the "
        "same scale (see medseg.data.transforms.to_model_space).",
    )
    train_repeats: int = Field(
        1,
        ge=1,
        description="Times each training image is drawn per epoch (useful with 'crop' on a few "
        "large images).",
    )
    split: SplitConfig = Field(default_factory=SplitConfig, description="Split options.")
    normalize: Literal["zscore", "minmax", "none"] = Field(
        "zscore",
        description="Intensity normalisation, statistics per image (2D) or per volume (3D): "
        "'zscore' per channel, 'minmax' to [0, 1], 'none' keeps values (8-bit images "
        "are still divided by 255).",
    )
    intensity_clip: tuple[float, float] | None = Field(
        None,
        description="Clip raw intensities to [low, high] before normalising (a CT window such as "
        "[-125, 275]).",
    )
    patch_size: tuple[int, ...] | None = Field(
        None,
        description="3-D patch training: the patch [D, H, W] in voxels (native resolution). "
        "Patches are sampled from whole volumes with foreground oversampling (data.oversample) and "
        "validation predicts whole volumes by a Gaussian-weighted sliding window of this size. "
        "null: 2-D training on samples of data.size.",
    )
    oversample: float = Field(
        1 / 3,
        ge=0,
        le=1,
        description="3-D patch training: share of each batch centred on a foreground voxel (nnU-Net: 1/3).",
    )
    val_root: Path | None = Field(
        None,
        description="A separate folder of validation cases (e.g. ACDC volumes_val/); all cases "
        "under root then train, and data.split.val_fraction is unused.",
    )
    synthetic: SyntheticConfig = Field(
        default_factory=SyntheticConfig, description="Options of the built-in phantom data."
    )
    cache: bool = Field(True, description="Keep decoded images and volumes in memory.")
    validate_on_load: bool = Field(
        True,
        description="Decode every file once when the dataset is built, so that bad files are "
        "reported before training starts; false only checks that files pair up.",
    )

    @field_validator("size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError("data.size must be at least 8x8 pixels")
        if max(v) > 16384:  # a 40000x40000 sample would only fail later, out of memory
            raise ValueError("data.size must be at most 16384 pixels a side")
        return v

    @field_validator("patch_size")
    @classmethod
    def _patch(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (len(v) != 3 or min(v) < 4):
            raise ValueError("data.patch_size must be [D, H, W] with every size >= 4")
        return v

    @field_validator("target_spacing")
    @classmethod
    def _target_spacing(cls, v: tuple[float | None, ...] | None) -> tuple[float | None, ...] | None:
        if v is not None and not all(s is None or 0 < s < float("inf") for s in v):
            raise ValueError("data.target_spacing must be three finite positive numbers (mm) or null")
        return v

    @field_validator("intensity_clip")
    @classmethod
    def _clip(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError("data.intensity_clip must be [low, high] with low < high")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if self.mask_values is not None and self.mask_threshold is not None:
            raise ValueError("set either data.mask_values or data.mask_threshold, not both")
        if self.mask_values is not None:
            bad = {
                k: v for k, v in self.mask_values.items() if not (0 <= v < IGNORE_INDEX or v == IGNORE_INDEX)
            }
            if bad:
                raise ValueError(f"data.mask_values classes must be in 0..254 (255 = ignore): {bad}")
        if (
            self.class_names is not None
            and self.num_classes is not None
            and len(self.class_names) != self.num_classes
        ):
            raise ValueError(
                f"data.class_names has {len(self.class_names)} names but "
                f"data.num_classes is {self.num_classes}"
            )
        if self.format not in ("synthetic",) and self.root is None:
            raise ValueError("data.root is required unless data.format is 'synthetic'")
        if self.val_root is not None and self.split.folds is not None:
            raise ValueError("data.val_root and data.split.folds exclude each other")
        if self.format == "synthetic" and "size" not in self.model_fields_set:
            self.size = (self.synthetic.size, self.synthetic.size)
        return self


class AugmentConfig(BaseModel):
    """Training augmentation; image, mask and region mask move together. Probabilities are per sample."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Master switch; false keeps only the resize/pad/crop to size.")
    preset: Literal["custom", "nnunet"] = Field(
        "custom",
        description="'custom': the fields below; 'nnunet': nnU-Net's default 2-D augmentation (rotation, "
        "scaling 0.7-1.4, noise, blur, brightness, contrast, low resolution, gamma, mirroring, with "
        "nnU-Net's probabilities; see medseg.data.transforms.nnunet_transforms), the fields below ignored.",
    )
    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    dflip: float = Field(
        0.0, ge=0, le=1, description="3-D patches: probability of a flip along the depth (first) axis."
    )
    rot90: float = Field(
        0.0, ge=0, le=1, description="Probability of a random multiple-of-90-degree rotation."
    )
    affine: float = Field(0.5, ge=0, le=1, description="Probability of a small rotation + scaling.")
    rotate_limit: float = Field(15.0, ge=0, le=180, description="Small rotation range, +- degrees.")
    scale: tuple[float, float] = Field((0.85, 1.15), description="Scale range of the affine transform.")
    elastic: float = Field(0.0, ge=0, le=1, description="Probability of an elastic deformation.")
    elastic_alpha: float = Field(
        200.0,
        ge=0,
        description="Elastic deformation strength (albumentations alpha, Simard et al. 2003); the "
        "mean displacement is about 0.09 * alpha / sigma pixels.",
    )
    elastic_sigma: float = Field(
        10.0, gt=0, description="Smoothness (Gaussian sigma, pixels) of the elastic field."
    )
    brightness_contrast: float = Field(
        0.3, ge=0, le=1, description="Probability of brightness/contrast jitter."
    )
    brightness: float = Field(0.1, ge=0, le=1, description="Brightness shift limit (fraction of the range).")
    contrast: float = Field(0.1, ge=0, le=1, description="Contrast factor limit (1 +- contrast).")
    gamma: float = Field(0.2, ge=0, le=1, description="Probability of a gamma change.")
    gamma_limit: tuple[float, float] = Field((0.8, 1.25), description="Gamma range.")
    noise: float = Field(0.0, ge=0, le=1, description="Probability of additive Gaussian noise.")
    noise_std: float = Field(0.03, ge=0, description="Noise standard deviation (fraction of the range).")

    @field_validator("scale", "gamma_limit")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("ranges must be (low, high) with 0 < low <= high")
        return v
