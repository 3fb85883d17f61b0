"""Stage 3's metric: ``WSSSIoUMetric`` (mmseg's ``IoUMetric`` scored by
:func:`wsss.evaluation.results.scores_from_areas`) on hand-made label maps whose every score is
worked out below, and against mmseg's own ``IoUMetric`` on random label maps.

The maps have ground truth 255 (ignored), predictions 255 (wrong for their ground-truth class,
nobody's false positive), predicted and ground-truth areas that differ for every class, and a
class that is predicted but absent from the ground truth (left out of the means, IoU/Acc null):
swapping the predicted and ground-truth areas, counting that class in the means, ignoring
another value or dividing aAcc by another count all change some number checked here.
"""
import math

import numpy as np
import pytest
import torch

from tagclip_cls.runtime.errors import UserError
from wsss.evaluation.results import scores_from_areas

CLASSES = ("background", "cat", "dog", "bird")  # K = 4; "bird" is predicted, never ground truth
X = 255

# image 1 (3 x 4): three ground-truth pixels are 255, whatever is predicted there is ignored
GT1 = [[0, 0, 1, 1],
       [0, 1, 1, X],
       [2, 2, X, X]]
PRED1 = [[0, 1, 1, 1],
         [0, 1, 3, 3],
         [2, 0, 1, 0]]
# image 2 (2 x 4): two pixels predicted 255
GT2 = [[1, 1, 1, 1],
       [0, 0, 2, 2]]
PRED2 = [[1, 1, X, 3],
         [0, 2, 2, X]]

# Confusion matrix by hand: rows ground truth 0..3, columns prediction 0..3 and 255.
#   gt 0: image 1 (0,0) x2, (0,1) x1; image 2 (0,0) x1, (0,2) x1          -> 3 1 1 0 | 0   (5)
#   gt 1: image 1 (1,1) x3, (1,3) x1; image 2 (1,1) x2, (1,X) x1, (1,3) x1 -> 0 5 0 2 | 1   (8)
#   gt 2: image 1 (2,2) x1, (2,0) x1; image 2 (2,2) x1, (2,X) x1          -> 1 0 2 0 | 1   (4)
#   gt 3: none                                                              -> 0 0 0 0 | 0   (0)
#   ignored (gt 255): image 1's (X,3), (X,1), (X,0)
CONFUSION = [[3, 1, 1, 0, 0],
             [0, 5, 0, 2, 1],
             [1, 0, 2, 0, 1],
             [0, 0, 0, 0, 0]]
INTERSECT = [3, 5, 2, 0]    # the diagonal
GT_PIXELS = [5, 8, 4, 0]    # row sums; 17 pixels in all
PRED_PIXELS = [4, 6, 3, 2]  # column sums 3+0+1, 1+5+0, 1+0+2, 0+2+0 (the 2 pixels predicted 255 are no class's)
UNION = [6, 9, 5, 2]        # gt + pred - intersect: 5+4-3, 8+6-5, 4+3-2, 0+2-0

EXPECTED = {
    "aAcc": 100 * 10 / 17,                   # (3 + 5 + 2) right of 17 ground-truth pixels = 58.82
    "mIoU": 100 * (3 / 6 + 5 / 9 + 2 / 5) / 3,  # (50 + 55.56 + 40) / 3 = 48.52; bird left out
    "mAcc": 100 * (3 / 5 + 5 / 8 + 2 / 4) / 3,  # (60 + 62.5 + 50) / 3 = 57.5; bird left out
    "num_classes_evaluated": 3,
    "per_class": {
        "background": {"IoU": 100 * 3 / 6, "Acc": 100 * 3 / 5, "gt_pixels": 5, "pred_pixels": 4},
        "cat": {"IoU": 100 * 5 / 9, "Acc": 100 * 5 / 8, "gt_pixels": 8, "pred_pixels": 6},
        "dog": {"IoU": 100 * 2 / 5, "Acc": 100 * 2 / 4, "gt_pixels": 4, "pred_pixels": 3},
        "bird": {"IoU": None, "Acc": None, "gt_pixels": 0, "pred_pixels": 2},
    },
}


def assert_same(actual, expected, where="scores"):
    """``actual == expected`` key for key: floats to 1e-12 relative, ints and None exactly."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), (where, actual)
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, float):
        assert isinstance(actual, float) and math.isclose(actual, expected, rel_tol=1e-12), (where, actual, expected)
    else:
        assert type(actual) is type(expected) and actual == expected, (where, actual, expected)


def test_the_hand_made_confusion_matrix_is_right():
    # the literals above, recounted pixel by pixel
    counts = np.zeros((4, 5), int)
    for gt, pred in ((GT1, PRED1), (GT2, PRED2)):
        for g, p in zip(np.ravel(gt), np.ravel(pred)):
            if g != X:
                counts[g, 4 if p == X else p] += 1
    assert counts.tolist() == CONFUSION
    assert np.diag(counts).tolist() == INTERSECT
    assert counts.sum(1).tolist() == GT_PIXELS and counts[:, :4].sum(0).tolist() == PRED_PIXELS
    assert (np.array(GT_PIXELS) + PRED_PIXELS - np.array(INTERSECT)).tolist() == UNION


def test_scores_from_areas_with_unequal_areas_checks_every_field():
    # signature: (intersect, union, gt_pixels, pred_pixels, class_names)
    assert_same(scores_from_areas(INTERSECT, UNION, GT_PIXELS, PRED_PIXELS, CLASSES), EXPECTED)
    # the same areas with prediction and ground truth swapped score differently everywhere:
    # Acc divides by the other area, and "bird" (2 ground-truth pixels now) enters the means at 0
    swapped = scores_from_areas(INTERSECT, UNION, PRED_PIXELS, GT_PIXELS, CLASSES)
    assert swapped["per_class"]["background"]["Acc"] == 75.0 and swapped["aAcc"] == 100 * 10 / 15
    assert swapped["per_class"]["bird"] == {"IoU": 0.0, "Acc": 0.0, "gt_pixels": 2, "pred_pixels": 0}
    assert swapped["mIoU"] == pytest.approx(100 * (3 / 6 + 5 / 9 + 2 / 5 + 0) / 4)


# ---- WSSSIoUMetric -------------------------------------------------------------------------

def _sample(pred, gt):
    """One model output as mmengine's ``Evaluator`` hands it to ``process`` (``to_dict()``)."""
    return {"pred_sem_seg": {"data": torch.tensor([pred], dtype=torch.int64)},
            "gt_sem_seg": {"data": torch.tensor([gt], dtype=torch.int64)}}


def _wsss_metric(classes=CLASSES):
    pytest.importorskip("mmcv.ops")
    from wsss.seg.metric import WSSSIoUMetric
    metric = WSSSIoUMetric()
    metric.dataset_meta = {"classes": classes}
    return metric


def test_wsss_metric_scores_the_hand_made_maps_exactly():
    metric = _wsss_metric()
    # two batches (one image each): the areas are summed over the set, not averaged per image
    metric.process({}, [_sample(PRED1, GT1)])
    metric.process({}, [_sample(PRED2, GT2)])
    returned = metric.compute_metrics(metric.results)
    assert_same(returned, {"aAcc": EXPECTED["aAcc"], "mIoU": EXPECTED["mIoU"], "mAcc": EXPECTED["mAcc"]})
    assert_same(metric.last_scores, {**EXPECTED, "num_images": 2})


def test_wsss_metric_through_mmengine_evaluate_with_seg_data_samples():
    metric = _wsss_metric()
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    def sample(pred, gt):
        s = SegDataSample()
        s.pred_sem_seg = PixelData(data=torch.tensor([pred]))
        s.gt_sem_seg = PixelData(data=torch.tensor([gt]))
        return s.to_dict()
    metric.process({}, [sample(PRED1, GT1), sample(PRED2, GT2)])  # one batch of two
    returned = metric.evaluate(2)
    assert_same(returned, {"aAcc": EXPECTED["aAcc"], "mIoU": EXPECTED["mIoU"], "mAcc": EXPECTED["mAcc"]})
    assert_same(metric.last_scores, {**EXPECTED, "num_images": 2})
    assert metric.results == []  # evaluate() clears them for the next validation


def test_wsss_metric_without_ground_truth_returns_no_means():
    metric = _wsss_metric()
    metric.process({}, [_sample([[1, 2], [X, 0]], [[X, X], [X, X]])])
    assert metric.compute_metrics(metric.results) == {}
    assert_same(metric.last_scores, {
        "aAcc": None, "mIoU": None, "mAcc": None, "num_classes_evaluated": 0, "num_images": 1,
        "per_class": {name: {"IoU": None, "Acc": None, "gt_pixels": 0, "pred_pixels": 0} for name in CLASSES}})


def _random_maps(rng, num_classes, count):
    """Label maps of several sizes: ground truth without the last class and with 255 regions,
    predictions right 60% of the time, else any class (the last one included) or 255."""
    maps = []
    for i in range(count):
        h, w = 17 + 3 * i, 23 - 2 * i
        gt = rng.integers(0, num_classes - 1, (h, w))
        gt[rng.random((h, w)) < 0.15] = X
        wrong = rng.integers(0, num_classes + 1, (h, w))
        wrong[wrong == num_classes] = X
        pred = np.where(rng.random((h, w)) < 0.6, np.where(gt == X, 0, gt), wrong)
        maps.append((pred, gt))
    return maps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wsss_metric_agrees_with_mmseg_iou_metric_where_classes_have_ground_truth(seed):
    metric = _wsss_metric(("c0", "c1", "c2", "c3", "c4", "c5"))
    from mmseg.evaluation import IoUMetric
    reference = IoUMetric()
    reference.dataset_meta = metric.dataset_meta
    rng = np.random.default_rng(seed)
    maps = _random_maps(rng, 6, 5)
    for start in range(0, len(maps), 2):  # batches of 2, 2, 1
        batch = [{"pred_sem_seg": {"data": torch.from_numpy(p)[None]},
                  "gt_sem_seg": {"data": torch.from_numpy(g)[None]}} for p, g in maps[start:start + 2]]
        metric.process({}, batch)
        reference.process({}, batch)
    ours = metric.compute_metrics(metric.results)
    theirs = reference.compute_metrics(reference.results)  # means rounded to 2 decimals
    areas = [sum(a).double() for a in zip(*reference.results)]  # intersect, union, pred, gt
    per_class = IoUMetric.total_area_to_metrics(*areas, metrics=["mIoU"])
    gt_pixels = areas[3].numpy()
    present = gt_pixels > 0
    assert present[:5].all() and not present[5] and areas[2][5] > 0  # "c5": predicted, never true
    scores = metric.last_scores
    assert scores["num_images"] == 5 and scores["num_classes_evaluated"] == 5
    for i, name in enumerate(metric.dataset_meta["classes"]):
        row = scores["per_class"][name]
        assert (row["gt_pixels"], row["pred_pixels"]) == (int(gt_pixels[i]), int(areas[2][i]))
        if present[i]:
            assert row["IoU"] == pytest.approx(100 * per_class["IoU"][i], rel=1e-12)
            assert row["Acc"] == pytest.approx(100 * per_class["Acc"][i], rel=1e-12)
        else:
            assert row["IoU"] is None and row["Acc"] is None
    assert ours["mIoU"] == pytest.approx(100 * per_class["IoU"][present].mean(), rel=1e-12)
    assert ours["mAcc"] == pytest.approx(100 * per_class["Acc"][present].mean(), rel=1e-12)
    assert ours["aAcc"] == pytest.approx(100 * per_class["aAcc"], rel=1e-12)
    # mmseg's own summary (means rounded to 2 decimals, in float32): aAcc and mAcc agree (its
    # Acc of c5 is NaN, left out too); its mIoU counts c5 at IoU 0, the WSSS convention leaves it out
    assert abs(theirs["aAcc"] - ours["aAcc"]) <= 0.005 + 1e-4
    assert abs(theirs["mAcc"] - ours["mAcc"]) <= 0.005 + 1e-4
    assert per_class["IoU"][5] == 0
    assert abs(theirs["mIoU"] - 100 * per_class["IoU"].mean()) <= 0.005 + 1e-4
    assert theirs["mIoU"] < ours["mIoU"] - 1


def test_wsss_metric_counts_pixels_exactly_past_2_to_24():
    # process() keeps each image's areas as float32 (torch.histc); summed in float32,
    # 2**24 + 1 rounds to 2**24 and the one missed pixel of image 2 would vanish
    metric = _wsss_metric(("a", "b"))
    big, f32 = 2 ** 24, torch.float32
    metric.results = [  # (intersect, union, pred, gt) per image, as process() appends them for a plain prediction
        {None: tuple(torch.tensor(v, dtype=f32) for v in ([big, 0], [big, 0], [big, 0], [big, 0]))},
        {None: tuple(torch.tensor(v, dtype=f32) for v in ([0, 0], [1, 0], [0, 0], [1, 0]))},
    ]
    metric.compute_metrics(metric.results)
    assert metric.last_scores["per_class"]["a"] == {
        "IoU": pytest.approx(100 * big / (big + 1), rel=1e-12), "Acc": pytest.approx(100 * big / (big + 1), rel=1e-12),
        "gt_pixels": big + 1, "pred_pixels": big}
    assert metric.last_scores["aAcc"] == pytest.approx(100 * big / (big + 1), rel=1e-12)
    assert metric.last_scores["aAcc"] < 100


def test_clip_es_config_prints_the_published_figures_with_their_experiment():
    """The CLIP-ES config's results tables carry CLIP-ES's four VOC figures (71.1/71.4 ImageNet
    init, 73.8/73.9 COCO init: its README's table) from data/published/figures.json, each saying
    that it was trained on masks made from ground-truth image labels."""
    from mmengine.config import Config
    from mmseg.registry import HOOKS

    import wsss.seg.register  # noqa: F401
    cfg = Config.fromfile("configs/deeplabv2/deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py")
    hook = HOOKS.build(next(h for h in cfg.custom_hooks if h["type"] == "SegResultsTableHook"))
    assert sorted(r["mIoU"] for r in hook.reference) == [71.1, 71.4, 73.8, 73.9]
    assert all("GROUND-TRUTH image labels" in r["name"] and r["name"].startswith("CLIP-ES, VOC2012 ")
               for r in hook.reference)


def test_published_figures_of_an_unknown_dataset_are_one_line():
    from wsss.seg.metric import SegResultsTableHook
    with pytest.raises(UserError, match="'voc2013' is not a dataset preset"):
        SegResultsTableHook(published_dataset="voc2013")
    assert SegResultsTableHook().reference == []
