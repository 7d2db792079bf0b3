"""What each registered module's paper claims as its gain: a table of the papers' claims.

:data:`CLAIMS` holds one :class:`Claim` per name in :func:`attncourse.available`: the result its
paper reports, with the metric, the backbone, the dataset and where the number comes from. These
are **the papers' claims, not the course's measurements**: nothing here was re-run. The guide
("Which module should I use?") prints them beside what the course measured, marked as claims.

Where the numbers come from: only ``shared/papers.md``, the course's notes on the papers and their
official code (one section per mechanism, its summary table, and its notes for Parts III-V).
:attr:`Claim.section` names the section; :attr:`Claim.source` says what that section cites (a
paper table, an official README, a secondary source). No number was taken from memory or from
anywhere else.

``checked``: papers.md tags each number with its confidence. ``checked=True`` when every number of
the claim is tagged as read (``[V-code]``, ``[V-README]``, ``[V-2nd]``, or ``[V]`` in the summary
table); ``checked=False`` when at least one of them is marked **UNVERIFIED** there (recalled, the
paper's table could not be opened), or when papers.md has no number at all. The guide prints
"not checked" for those.

Conventions:

- accuracy, not error: a paper that reports top-1 *error* e is recorded as ``100 - e`` (written
  ``_from_error(e)`` below, so the paper's figure stays visible) and the note says so;
- ``baseline`` is the backbone without the module, ``with_module`` the same backbone with it, both
  in the metric's units; :attr:`Claim.gain` is their difference;
- where papers.md gives no such pair (a whole architecture such as ViT or VOLO, a model reported
  on another task, numbers not retrieved), ``baseline`` is ``None``, ``with_module`` is the
  headline as papers.md gives it (or ``None``), ``gain`` is ``None``, and the note says why.

>>> from attncourse.claims import claim
>>> c = claim("eca")
>>> c.backbone, c.baseline, c.with_module, c.checked
('ResNet-50', 75.2, 77.48, True)
>>> round(c.gain, 2)
2.28
>>> claim("vit").gain is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Claim", "CLAIMS", "claim"]


@dataclass(frozen=True)
class Claim:
    """The gain a module's paper reports, as ``shared/papers.md`` records it.

    Attributes:
        module: the registered name (``attncourse.available()``), e.g. ``"se"``.
        paper: first author, venue and year, e.g. ``"Hu et al., CVPR 2018"``.
        metric: what is measured and its unit, e.g. ``"ImageNet top-1 (%)"``.
        backbone: the network the module is put into (or the whole network, for an architecture).
        dataset: the dataset and split.
        baseline: the backbone without the module, in the metric's units; ``None`` where papers.md
            gives no baseline.
        with_module: the backbone with the module (or the headline result); ``None`` where
            papers.md gives no number.
        checked: ``True`` if every number is tagged as read in papers.md ([V-code], [V-README],
            [V-2nd], [V]); ``False`` if one is marked UNVERIFIED there, or there is none.
        source: what papers.md says the numbers come from ("paper Table 2", "official README").
        section: the section of papers.md (1-35) they are read from; ``None`` if it has none.
        note: conversions (error to accuracy), why there is no gain, other figures worth knowing.
    """

    module: str
    paper: str
    metric: str
    backbone: str
    dataset: str
    baseline: float | None
    with_module: float | None
    checked: bool
    source: str
    section: int | None
    note: str = ""

    @property
    def gain(self) -> float | None:
        """``with_module - baseline`` in the metric's units, or ``None`` when either is missing."""
        if self.baseline is None or self.with_module is None:
            return None
        return self.with_module - self.baseline


def _from_error(error: float) -> float:
    """Top-1 accuracy (%) from a top-1 error (%): ``100 - error``, to the paper's 3 decimals."""
    return round(100.0 - error, 3)


_IMAGENET = "ImageNet top-1 (%)"
_IN1K = "ImageNet-1k val"

#: Every registered module's claim, by its registered name (one entry per name of
#: :func:`attncourse.available`).
CLAIMS: dict[str, Claim] = {
    c.module: c
    for c in [
        # ----- Part II: channels, then channels and positions (ResNet-50 on ImageNet, mostly) -----
        Claim(
            module="se",
            paper="Hu et al., CVPR 2018",
            metric=_IMAGENET,
            backbone="ResNet-50",
            dataset=_IN1K,
            baseline=_from_error(24.80),
            with_module=_from_error(23.29),
            checked=False,
            source="paper Table 2 (re-implementation), recalled",
            section=1,
            note="Top-1 error 24.80 -> 23.29 in the paper, recorded as 100 - error. papers.md marks the "
            "pair UNVERIFIED (recalled); the paper also states about +2.5M parameters. The released "
            "retrained SE-ResNet-50 checkpoint has 22.37 % top-1 error [V-README].",
        ),
        Claim(
            module="eca",
            paper="Wang et al., CVPR 2020",
            metric=_IMAGENET,
            backbone="ResNet-50",
            dataset=_IN1K,
            baseline=75.20,
            with_module=77.48,
            checked=True,
            source="Papers-with-Code (77.48) and the abstract's +2.28 [V-2nd]",
            section=2,
            note="24.37M parameters and 3.86 GFLOPs for both, by the paper. The released ECA-Net50 "
            "checkpoint: 77.42 [V-README].",
        ),
        Claim(
            module="sk",
            paper="Li et al., CVPR 2019",
            metric=_IMAGENET,
            backbone="ResNeXt-50",
            dataset=_IN1K,
            baseline=_from_error(22.23),
            with_module=_from_error(20.79),
            checked=True,
            source="paper Table 2, as in the official README [V-README]",
            section=6,
            note="Top-1 error 22.23 (ResNeXt-50, 25.0M) -> 20.79 (SKNet-50, 27.5M), recorded as 100 - "
            "error. SK replaces the 3x3 grouped convolution of the ResNeXt bottleneck; the table has "
            "no plain ResNet-50 row. Same table: +BAM 21.70, +CBAM 21.40, SENet-50 21.12 error.",
        ),
        Claim(
            module="simam",
            paper="Yang et al., ICML 2021",
            metric=_IMAGENET,
            backbone="ResNet-50",
            dataset=_IN1K,
            baseline=76.31,
            with_module=77.45,
            checked=False,
            source="official README (77.45) [V-README]; the baseline is recalled",
            section=8,
            note="SimAM-R50 77.45 is read in the README; the paper's ResNet-50 baseline of about 76.31 "
            "is UNVERIFIED in papers.md, so the gain is not checked. SimAM adds no parameters; which "
            "lambda the ImageNet rows used is not confirmed (code default 1e-4, README commands 0.1).",
        ),
        Claim(
            module="cbam",
            paper="Woo et al., ECCV 2018",
            metric=_IMAGENET,
            backbone="ResNet-50",
            dataset=_IN1K,
            baseline=_from_error(24.56),
            with_module=_from_error(22.66),
            checked=False,
            source="paper ImageNet table, recalled",
            section=3,
            note="Top-1 error 24.56 -> 22.66, recorded as 100 - error; UNVERIFIED (recalled) in "
            "papers.md. Same table: +SE 23.14 error. The released ResNet50+CBAM checkpoint (100 "
            "epochs) has ACC@1 77.622 [V-README].",
        ),
        Claim(
            module="bam",
            paper="Park et al., BMVC 2018",
            metric=_IMAGENET,
            backbone="ResNet-50",
            dataset=_IN1K,
            baseline=_from_error(24.56),
            with_module=_from_error(24.02),
            checked=False,
            source="paper ImageNet table, recalled",
            section=4,
            note="Top-1 error 24.56 -> 24.02, recorded as 100 - error; UNVERIFIED in papers.md. Three "
            "BAMs, one at the end of each of the first three stages (25.92M). The released "
            "ResNet50+BAM checkpoint (90 epochs) has ACC@1 76.860 [V-README].",
        ),
        Claim(
            module="scse",
            paper="Roy et al., MICCAI 2018",
            metric="Dice",
            backbone="fully convolutional segmentation networks (U-Net, SD-Net, FC-DenseNet)",
            dataset="brain (MALC) and whole-body (Visceral) segmentation",
            baseline=None,
            with_module=None,
            checked=False,
            source="none: papers.md did not retrieve the numbers",
            section=5,
            note="The paper reports Dice gains on segmentation only (no ImageNet experiment); "
            "papers.md marks them UNVERIFIED and gives no numbers, so no gain is recorded.",
        ),
        Claim(
            module="coord",
            paper="Hou et al., CVPR 2021",
            metric=_IMAGENET,
            backbone="MobileNetV2-1.0",
            dataset=_IN1K,
            baseline=72.3,
            with_module=74.3,
            checked=True,
            source="the CA paper as quoted in the official EMA README [V-2nd]",
            section=7,
            note="3.5M -> 3.95M parameters, 300 -> 310 MFLOPs. Same table: +SE 73.5, +CBAM 73.6. The "
            "paper's headline is not on ResNet-50.",
        ),
        Claim(
            module="triplet",
            paper="Misra et al., WACV 2021",
            metric=_IMAGENET,
            backbone="ResNet-50",
            dataset=_IN1K,
            baseline=75.44,
            with_module=77.48,
            checked=True,
            source="official README (77.48) [V-README]; +2.04 from a summary of the paper [V-2nd]",
            section=9,
            note="ResNet-50 + TA (k = 7): 22.52 % top-1 error = 77.48 %. The baseline 75.44 is 77.48 "
            "minus the claimed +2.04 (it equals CBAM's 24.56 % error).",
        ),
        Claim(
            module="gam",
            paper="Liu et al., arXiv 2021",
            metric=_IMAGENET,
            backbone="ResNet-50 / MobileNetV2",
            dataset=_IN1K,
            baseline=None,
            with_module=None,
            checked=False,
            source="none: the paper's ImageNet rows are not in papers.md",
            section=13,
            note="papers.md marks the paper's ImageNet ResNet-50 / MobileNetV2 rows UNVERIFIED and gives "
            "no numbers. The only numbers it has are a third party's, not the GAM paper's claim: the "
            "official EMA README reports CIFAR-100 ResNet-50 77.26 -> 81.33 for ResNet50 + GAM "
            "(149.5M parameters).",
        ),
        Claim(
            module="ema",
            paper="Ouyang et al., ICASSP 2023",
            metric=_IMAGENET,
            backbone="MobileNetV2",
            dataset=_IN1K,
            baseline=72.3,
            with_module=74.32,
            checked=True,
            source="official README [V-README]",
            section=14,
            note="timm 400-epoch recipe; 3.50M -> 3.55M parameters. Also in the README: CIFAR-100 "
            "ResNet-50 77.26 -> 80.69; COCO YOLOv5s mAP50 56.0 -> 57.8. No ImageNet ResNet-50 row.",
        ),
        Claim(
            module="sa",
            paper="Zhang & Yang, ICASSP 2021",
            metric=_IMAGENET,
            backbone="ResNet-50",
            dataset=_IN1K,
            baseline=76.384,
            with_module=77.724,
            checked=False,
            source="paper table, recalled; the abstract's +1.34 [V-2nd]",
            section=15,
            note="The pair is UNVERIFIED in papers.md but consistent with the abstract's gain of 'more "
            "than 1.34 %' [V-2nd]. The released sa_resnet50 checkpoint: 77.88 [V-README].",
        ),
        # ----- Part III: self-attention and relatives (most report on another task) -----
        Claim(
            module="mhsa",
            paper="Vaswani et al., NeurIPS 2017",
            metric="none in papers.md",
            backbone="Transformer",
            dataset="none in papers.md",
            baseline=None,
            with_module=None,
            checked=False,
            source="none: papers.md has no section on Vaswani et al.",
            section=None,
            note="papers.md has no section on 'Attention Is All You Need', whose results are on "
            "sequences, not on image feature maps; no number is recorded. Self-attention over image "
            "tokens with a reported result: see claim('vit').",
        ),
        Claim(
            module="nonlocal",
            paper="Wang et al., CVPR 2018",
            metric="Kinetics-400 top-1 (%)",
            backbone="ResNet-50 C2D, 32 x 2 frames",
            dataset="Kinetics-400 (video classification)",
            baseline=71.8,
            with_module=73.8,
            checked=True,
            source="paper, as listed in papers.md (summary table: [V])",
            section=10,
            note="Reported on video, not on ImageNet (there is no ImageNet number). The official "
            "repository's re-implementation gives 72.0 -> 73.9, and I3D 73.3 -> 74.9 [V-README].",
        ),
        Claim(
            module="pam",
            paper="Fu et al., CVPR 2019",
            metric="Cityscapes mIoU (%)",
            backbone="dilated FCN, ResNet-50",
            dataset="Cityscapes val",
            baseline=None,
            with_module=None,
            checked=False,
            source="none: papers.md has no row for this module alone",
            section=11,
            note="papers.md gives only the whole DANet (position and channel attention together) against "
            "its baseline, 70.03 -> 76.34, UNVERIFIED: see claim('danet'). The ablation row with this "
            "module alone was not retrieved, so no gain is recorded.",
        ),
        Claim(
            module="cam",
            paper="Fu et al., CVPR 2019",
            metric="Cityscapes mIoU (%)",
            backbone="dilated FCN, ResNet-50",
            dataset="Cityscapes val",
            baseline=None,
            with_module=None,
            checked=False,
            source="none: papers.md has no row for this module alone",
            section=11,
            note="papers.md gives only the whole DANet (position and channel attention together) against "
            "its baseline, 70.03 -> 76.34, UNVERIFIED: see claim('danet'). The ablation row with this "
            "module alone was not retrieved, so no gain is recorded.",
        ),
        Claim(
            module="danet",
            paper="Fu et al., CVPR 2019",
            metric="Cityscapes mIoU (%)",
            backbone="dilated FCN, ResNet-50",
            dataset="Cityscapes val",
            baseline=70.03,
            with_module=76.34,
            checked=False,
            source="paper ablation, recalled",
            section=11,
            note="Semantic segmentation, not classification; UNVERIFIED in papers.md. The paper's head "
            "adds convolutions around each module. Read in the official README: Cityscapes test 81.5 "
            "(ResNet-101) and, with the renewed code, DANet-101 val 79.93 single-scale [V-README].",
        ),
        Claim(
            module="ccnet",
            paper="Huang et al., ICCV 2019",
            metric="Cityscapes mIoU (%)",
            backbone="not stated for the released model (the paper's: ResNet-101)",
            dataset="Cityscapes val, single scale",
            baseline=None,
            with_module=79.74,
            checked=True,
            source="official README (released R = 2 model) [V-README]",
            section=12,
            note="A segmentation model, not a plug-in gain: papers.md gives no baseline without the "
            "module. Released model: val 79.74, test 79.01. The paper: ResNet-101 val about 79.8 "
            "(R = 2), test 81.4 (UNVERIFIED), ADE20K 45.22.",
        ),
        Claim(
            module="gc",
            paper="Cao et al., ICCVW 2019",
            metric="COCO box AP",
            backbone="Mask R-CNN, ResNet-50-FPN, 1x schedule (fixed BN)",
            dataset="COCO (object detection)",
            baseline=37.3,
            with_module=38.5,
            checked=True,
            source="official README [V-README]",
            section=30,
            note="Ratio r = 16 in stages c3-c5. Mask AP 34.2 -> 35.1; with r = 4: 38.9 box / 35.5 mask "
            "AP. An ImageNet ResNet-50 pair (about 76.88 -> 77.70) is UNVERIFIED in papers.md.",
        ),
        # ----- Part IV: linear-time attention -----
        Claim(
            module="linear",
            paper="Katharopoulos et al., ICML 2020",
            metric="autoregressive inference speed-up over softmax attention (x, 'up to')",
            backbone="autoregressive transformer",
            dataset="not named in papers.md (its experiments: image generation on MNIST, CIFAR-10; speech)",
            baseline=None,
            with_module=4000.0,
            checked=False,
            source="the abstract's claim, recalled",
            section=16,
            note="No ImageNet or ResNet result: the paper claims speed, 'up to 4000x faster' "
            "autoregressive inference (UNVERIFIED in papers.md), not an accuracy gain.",
        ),
        Claim(
            module="flatten",
            paper="Han et al., ICCV 2023",
            metric=_IMAGENET,
            backbone="Swin-T",
            dataset=_IN1K,
            baseline=81.3,
            with_module=82.1,
            checked=True,
            source="official README: FLatten-Swin-T 82.1 (+0.8) [V-README]",
            section=17,
            note="Focused linear attention in place of window attention in stages 1-2 of Swin-T "
            "(softmax attention in stages 3-4). Also in the README: PVT-T +2.7 (77.8), PVTv2-B0 "
            "+0.6 (71.1).",
        ),
        Claim(
            module="external",
            paper="Guo et al., TPAMI 2022",
            metric="top-1 (%)",
            backbone="EAMLP_7_384 (the paper's EAMLP network, multi-head external attention)",
            dataset="not named in papers.md (the README's classification evaluation)",
            baseline=None,
            with_module=71.7,
            checked=True,
            source="official README [V-README]",
            section=18,
            note="A whole network, not a plug-in gain; papers.md gives no baseline. The paper's "
            "segmentation and classification numbers are UNVERIFIED and not given.",
        ),
        # ----- Part V: local attention -----
        Claim(
            module="window",
            paper="Liu et al., ICCV 2021",
            metric=_IMAGENET,
            backbone="Swin-T (4.5 GFLOPs)",
            dataset=_IN1K,
            baseline=None,
            with_module=81.3,
            checked=True,
            source="paper Table 1 (section 4.1), via third-party notes [V-2nd]",
            section=33,
            note="A whole architecture, not a plug-in gain: DeiT-S (79.8) in the same table is another "
            "network. Table 4 ablation [V-2nd]: no shift 80.2 -> shifted windows 81.3, a gain of the "
            "shift, not of window attention. The released checkpoint: 81.2, 28M [V-README]; Table 1 "
            "says 29M (one source), 28.29M by count.",
        ),
        Claim(
            module="outlook",
            paper="Yuan et al., TPAMI 2022",
            metric=_IMAGENET,
            backbone="VOLO-D1 (27M)",
            dataset=_IN1K,
            baseline=None,
            with_module=84.2,
            checked=True,
            source="official README [V-README]",
            section=19,
            note="A whole architecture, not a plug-in gain; papers.md gives no baseline. VOLO-D1 at "
            "384: 85.2.",
        ),
        Claim(
            module="cot",
            paper="Li et al., TPAMI 2022",
            metric=_IMAGENET,
            backbone="CoTNet-50 (22.2M, 3.3 GFLOPs)",
            dataset=_IN1K,
            baseline=None,
            with_module=81.3,
            checked=True,
            source="official README [V-README]",
            section=20,
            note="CoT replaces the 3x3 convolution of every ResNet-50 bottleneck; the 350-epoch "
            "'advanced' recipe. The paper's same-recipe ResNet-50 baseline is UNVERIFIED and not "
            "given, so no gain is recorded. SE-CoTNetD-50: 81.6.",
        ),
        Claim(
            module="masa",
            paper="Fan et al., CVPR 2024",
            metric=_IMAGENET,
            backbone="RMT-S (27M, 4.5 GFLOPs)",
            dataset=_IN1K,
            baseline=None,
            with_module=84.1,
            checked=True,
            source="official README [V-README]",
            section=27,
            note="A whole architecture, not a plug-in gain; papers.md gives no baseline. 84.8 with "
            "token labelling.",
        ),
        Claim(
            module="hab",
            paper="Chen et al., CVPR 2023",
            metric="Urban100 x4 super-resolution PSNR (dB)",
            backbone="HAT (20.8M) against SwinIR (11.9M)",
            dataset="Urban100, x4",
            baseline=27.45,
            with_module=27.97,
            checked=True,
            source="official README [V-README]",
            section=24,
            note="Super-resolution, not classification. The baseline is another network (SwinIR), and "
            "HAT adds both HAB and OCAB and more parameters: the gain is the whole network's, shared "
            "with claim('ocab'). Set5: 32.92 -> 33.04.",
        ),
        Claim(
            module="ocab",
            paper="Chen et al., CVPR 2023",
            metric="Urban100 x4 super-resolution PSNR (dB)",
            backbone="HAT (20.8M) against SwinIR (11.9M)",
            dataset="Urban100, x4",
            baseline=27.45,
            with_module=27.97,
            checked=True,
            source="official README [V-README]",
            section=24,
            note="Super-resolution, not classification. The baseline is another network (SwinIR), and "
            "HAT adds both HAB and OCAB and more parameters: the gain is the whole network's, shared "
            "with claim('hab'). Set5: 32.92 -> 33.04.",
        ),
        # ----- Part VI: blocks and networks -----
        Claim(
            module="vit",
            paper="Dosovitskiy et al., ICLR 2021",
            metric=_IMAGENET,
            backbone="ViT-B/16 (86M)",
            dataset="ImageNet-1k val, trained on ImageNet-1k only, fine-tuned at 384 x 384",
            baseline=None,
            with_module=77.9,
            checked=True,
            source="paper Table 5 (77.91), via quoting notes [V-2nd]",
            section=34,
            note="A whole architecture, not a plug-in gain. Trained on ImageNet-1k only it is below "
            "comparable ResNets (Fig. 3); pre-trained on JFT-300M 84.15 [V-2nd, one source]; the "
            "README's ImageNet-21k -> 1k replication 84.53 [V-README].",
        ),
        Claim(
            module="mobilevit",
            paper="Mehta & Rastegari, ICLR 2022",
            metric=_IMAGENET,
            backbone="MobileViT-S (5.6M)",
            dataset=_IN1K,
            baseline=None,
            with_module=78.3,
            checked=True,
            source="official README model zoo [V-README]",
            section=21,
            note="The whole network, not a plug-in gain; papers.md gives no baseline. The paper reports "
            "78.4 (UNVERIFIED). XXS 69.0, XS 74.7.",
        ),
        Claim(
            module="fan",
            paper="Zhou et al., ICML 2022",
            metric=_IMAGENET,
            backbone="FAN-S-ViT (28.0M)",
            dataset=_IN1K,
            baseline=None,
            with_module=82.5,
            checked=True,
            source="official README [V-README]",
            section=26,
            note="A whole architecture, not a plug-in gain; papers.md gives no baseline. The paper's "
            "point is robustness: ImageNet-C 64.5 for the same model.",
        ),
        Claim(
            module="revit",
            paper="Diko et al., arXiv 2024",
            metric=_IMAGENET,
            backbone="ReViT-B (ViT-B based, 86M)",
            dataset=_IN1K,
            baseline=None,
            with_module=82.4,
            checked=True,
            source="official README [V-README]",
            section=28,
            note="The paper's ViT-B baseline is UNVERIFIED in papers.md and not given, so no gain is "
            "recorded. Also in the README: ReMViTv2-T 82.7, ReSwin-T 81.5.",
        ),
        Claim(
            module="muse",
            paper="Zhao et al., arXiv 2019",
            metric="WMT14 En-Fr BLEU",
            backbone="MUSE (12 encoder and 12 decoder layers)",
            dataset="WMT14 English-French (machine translation)",
            baseline=None,
            with_module=43.5,
            checked=True,
            source="official README and the journal version's Tables 1-2 [V-README]",
            section=35,
            note="Machine translation on 1-D sequences, not images; papers.md gives no Transformer "
            "baseline, so no gain is recorded. Also: WMT14 En-De 29.9, IWSLT14 De-En 36.3. "
            "MUSE-simple (no convolution branch): 43.2 / 29.8 / 35.8.",
        ),
    ]
}


def claim(name: str) -> Claim:
    """The claim of the module registered as ``name``.

    Raises:
        ValueError: for a name with no claim, listing the known names.
    """
    try:
        return CLAIMS[name]
    except KeyError:
        raise ValueError(
            f"attncourse.claims.claim: no claim for the module {name!r}; known: {', '.join(sorted(CLAIMS))}"
        ) from None
