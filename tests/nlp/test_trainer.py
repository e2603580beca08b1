"""ImbalancedTrainer: its loss against hand computations, ignored positions, sample weights, samplers, bad input.

Models are tiny, randomly initialised RoBERTas built from configs (nothing is downloaded).
"""

import copy
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    RobertaConfig,
    TrainingArguments,
)

from equipoise.core.losses import class_balanced_loss, dice_loss, softmax_focal_loss
from equipoise.core.samplers import SAMPLERS
from equipoise.nlp.trainer import ImbalancedTrainer

NUM_TAGS = 5
PAD = 1  # RoBERTa's padding_idx: padded positions get no position id of their own


def tiny_config(num_labels: int) -> RobertaConfig:
    return RobertaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def tagger(seed: int = 0, num_labels: int = NUM_TAGS):
    torch.manual_seed(seed)
    return AutoModelForTokenClassification.from_config(tiny_config(num_labels))


def classifier(seed: int = 0, num_labels: int = 3):
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(tiny_config(num_labels))


def training_args(tmp_path, **overrides) -> TrainingArguments:
    options = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "per_device_train_batch_size": 4,
        "disable_tqdm": True,
        "logging_strategy": "no",
        "dataloader_pin_memory": False,
    }
    return TrainingArguments(**{**options, **overrides})


def tagging_batch() -> dict[str, torch.Tensor]:
    """4 sentences of 8 tokens: <s> first, padding at the end, labels -100 on both; every tag occurs."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 100, (4, 8), generator=generator)
    labels = torch.randint(0, NUM_TAGS, (4, 8), generator=generator)
    labels[:, :5] = torch.tensor([0, 1, 2, 3, 4])  # every class present, class 0 most frequent below
    labels[:, 5] = 0
    lengths = torch.tensor([8, 7, 6, 8])
    attention_mask = (torch.arange(8) < lengths[:, None]).long()
    input_ids[:, 0] = 0
    input_ids[attention_mask == 0] = PAD
    labels[:, 0] = -100
    labels[attention_mask == 0] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def as_examples(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    size = next(iter(batch.values())).shape[0]
    return [{key: value[i] for key, value in batch.items()} for i in range(size)]


def classification_batch(weights=None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 100, (4, 6), generator=generator)
    input_ids[:, 0] = 0
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(4, 6, dtype=torch.long),
        "labels": torch.tensor([0, 2, 1, 0]),
    }
    if weights is not None:
        batch["sample_weight"] = torch.tensor(weights, dtype=torch.float32)
    return batch


def flat_logits_and_labels(model, batch):
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1)


def tag_counts(batch) -> torch.Tensor:
    labels = batch["labels"]
    return torch.bincount(labels[labels != -100], minlength=NUM_TAGS).to(torch.float64)


def hand_focal(logits, labels, gamma):
    valid = labels != -100
    log_p = F.log_softmax(logits[valid], dim=1).gather(1, labels[valid, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


# ---- the loss equals the hand computation -----------------------------------------------------


def _expected(name, options, logits, labels, counts):
    valid = labels != -100
    if name == "cross_entropy" and not options:
        return F.cross_entropy(logits, labels, ignore_index=-100)
    if name == "cross_entropy" and options["weight"] == "inverse_frequency":
        weight = (1 / counts) * NUM_TAGS / (1 / counts).sum()
        return F.cross_entropy(logits, labels, weight=weight.float(), ignore_index=-100)
    if name == "cross_entropy" and options["weight"] == "effective_number":
        beta = options["weight_beta"]
        weight = (1 - beta) / (1 - beta**counts)
        weight = weight * NUM_TAGS / weight.sum()
        return F.cross_entropy(logits, labels, weight=weight.float(), ignore_index=-100)
    if name == "cross_entropy":
        return F.cross_entropy(logits, labels, weight=torch.tensor(options["weight"]), ignore_index=-100)
    if name == "focal":
        by_hand = hand_focal(logits, labels, options["gamma"])
        torch.testing.assert_close(softmax_focal_loss(logits[valid], labels[valid], gamma=options["gamma"]), by_hand)
        return by_hand
    if name == "dice":
        return dice_loss(logits[valid], labels[valid])
    if name == "class_balanced":
        return class_balanced_loss(logits[valid], labels[valid], counts, beta=0.99, loss_type="softmax")
    if name == "sigmoid_focal":
        one_hot = F.one_hot(labels[valid], NUM_TAGS).float()
        p = torch.sigmoid(logits[valid])
        p_t = p * one_hot + (1 - p) * (1 - one_hot)
        alpha_t = 0.25 * one_hot + 0.75 * (1 - one_hot)
        return (-alpha_t * (1 - p_t) ** 2 * p_t.log()).mean()
    raise AssertionError(name)


LOSS_CASES = [
    ("cross_entropy", {}),
    ("cross_entropy", {"weight": "inverse_frequency"}),
    ("cross_entropy", {"weight": "effective_number", "weight_beta": 0.9}),
    ("cross_entropy", {"weight": [0.5, 1.0, 2.0, 1.5, 3.0]}),
    ("focal", {"gamma": 2.0}),
    ("dice", {}),
    ("class_balanced", {"beta": 0.99, "loss_type": "softmax"}),
    ("sigmoid_focal", {}),
]


@pytest.mark.parametrize(("name", "options"), LOSS_CASES, ids=[f"{n}-{'-'.join(o) or 'plain'}" for n, o in LOSS_CASES])
def test_compute_loss_equals_hand_loss(tmp_path, name, options):
    batch = tagging_batch()
    model = tagger()
    trainer = ImbalancedTrainer(
        model=model, args=training_args(tmp_path), train_dataset=as_examples(batch), loss=name, loss_options=options
    )
    loss = trainer.compute_loss(model, batch)
    logits, labels = flat_logits_and_labels(model, batch)
    expected = _expected(name, options, logits, labels, tag_counts(batch))
    assert loss.dtype == torch.float32 and loss.requires_grad
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_class_counts_are_counted_over_the_training_labels(tmp_path):
    batch = tagging_batch()
    trainer = ImbalancedTrainer(
        model=tagger(), args=training_args(tmp_path), train_dataset=as_examples(batch), loss="ldam"
    )
    torch.testing.assert_close(trainer.class_counts, tag_counts(batch))
    torch.testing.assert_close(trainer.loss_fn.class_counts, tag_counts(batch))
    given = ImbalancedTrainer(model=tagger(), args=training_args(tmp_path), loss="ldam", class_counts=[9, 8, 7, 6, 5])
    assert given.class_counts.tolist() == [9, 8, 7, 6, 5]


def test_dice_loss_by_hand_on_three_tokens(tmp_path):
    # Li et al. 2020 with smooth=1, alpha=0.01, squared denominator, written out per token.
    trainer = ImbalancedTrainer(model=tagger(), args=training_args(tmp_path), loss="dice")
    logits = torch.tensor([[[2.0, -1.0, 0.5, 0.0, 0.3], [0.1, 0.2, 3.0, -2.0, 0.0], [9.0, 9.0, 9.0, 9.0, 9.0]]])
    labels = torch.tensor([[0, 2, -100]])
    per_token = []
    for row, target in zip(logits[0, :2].tolist(), [0, 2]):
        exps = [math.exp(z) for z in row]
        total = 0.0
        for c, e in enumerate(exps):
            p = e / sum(exps)
            p_adjusted = (1 - p) ** 0.01 * p
            y = 1.0 if c == target else 0.0
            total += 1 - (2 * p_adjusted * y + 1) / (p_adjusted**2 + y**2 + 1)
        per_token.append(total)
    loss = trainer.loss_from_logits(logits, labels)
    assert loss.item() == pytest.approx(sum(per_token) / 2, rel=1e-5)  # float32: 1 - ratio cancels digits


def test_set_level_dice_sums_over_the_batch_tokens_by_hand(tmp_path):
    # batch_dice: one dice per tag over the two kept tokens of the batch, the third (-100) left out.
    trainer = ImbalancedTrainer(
        model=tagger(), args=training_args(tmp_path), loss="dice", loss_options={"batch_dice": True}
    )
    logits = torch.tensor([[[2.0, -1.0, 0.5, 0.0, 0.3], [0.1, 0.2, 3.0, -2.0, 0.0], [9.0, -9.0, 9.0, 9.0, 9.0]]])
    labels = torch.tensor([[0, 2, -100]])
    adjusted = []
    for row in logits[0, :2].tolist():
        exps = [math.exp(z) for z in row]
        adjusted.append([(1 - e / sum(exps)) ** 0.01 * (e / sum(exps)) for e in exps])
    total = 0.0
    for c in range(NUM_TAGS):
        ys = [1.0 if target == c else 0.0 for target in (0, 2)]
        intersection = sum(q[c] * y for q, y in zip(adjusted, ys))
        sizes = sum(q[c] ** 2 for q in adjusted) + sum(ys)
        total += 1 - (2 * intersection + 1) / (sizes + 1)
    assert trainer.loss_from_logits(logits, labels).item() == pytest.approx(total, rel=1e-5)
    assert trainer.loss_fn.batch_dice is True


def test_set_level_dice_refuses_sample_weights(tmp_path):
    batch = tagging_batch()
    batch["sample_weight"] = torch.tensor([1.0, 3.0, 0.0, 0.5])
    model = tagger()
    trainer = ImbalancedTrainer(
        model=model, args=training_args(tmp_path), loss="dice", loss_options={"batch_dice": True}
    )
    with pytest.raises(ValueError, match=r"loss_options\['batch_dice'\]=True makes dice one value per batch"):
        trainer.compute_loss(model, batch)


# ---- ignored positions ------------------------------------------------------------------------


def test_ignored_positions_contribute_nothing(tmp_path):
    trainer = ImbalancedTrainer(model=tagger(), args=training_args(tmp_path), loss="dice")
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, NUM_TAGS, generator=generator, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2, 0, -100, -100], [-100, 4, 3, 0, 0, -100]])
    loss = trainer.loss_from_logits(logits, labels)
    (gradient,) = torch.autograd.grad(loss, logits)
    assert bool((gradient[labels == -100] == 0).all()) and bool((gradient[labels != -100] != 0).any())
    changed = logits.detach().clone()
    changed[labels == -100] = 50 * torch.randn(int((labels == -100).sum()), NUM_TAGS, generator=generator)
    assert trainer.loss_from_logits(changed, labels).item() == loss.item()
    all_ignored = trainer.loss_from_logits(logits, torch.full_like(labels, -100))
    assert all_ignored.item() == 0.0 and all_ignored.requires_grad


def test_model_logits_at_ignored_positions_do_not_change_compute_loss(tmp_path):
    batch = tagging_batch()
    model = tagger()
    trainer = ImbalancedTrainer(model=model, args=training_args(tmp_path), loss="dice")
    reference = trainer.compute_loss(model, batch).item()
    ignored = batch["labels"] == -100

    def scramble(module, args, output):
        return output + 100 * torch.randn_like(output) * ignored[..., None]

    handle = model.classifier.register_forward_hook(scramble)
    try:
        assert trainer.compute_loss(model, batch).item() == pytest.approx(reference, rel=1e-6)
    finally:
        handle.remove()
    # A second label layout: more padding (and -100) after the same tokens gives the same loss.
    padded = {
        key: F.pad(value, (0, 3), value={"labels": -100, "input_ids": PAD}.get(key, 0)) for key, value in batch.items()
    }
    assert trainer.compute_loss(model, padded).item() == pytest.approx(reference, rel=1e-5)


def test_dice_training_reduces_the_loss_of_its_batch(tmp_path):
    batch = tagging_batch()
    model = tagger()
    args = training_args(tmp_path, max_steps=5, learning_rate=5e-3, logging_strategy="steps", logging_steps=1)
    trainer = ImbalancedTrainer(model=model, args=args, train_dataset=as_examples(batch), loss="dice")
    with torch.no_grad():
        before = trainer.compute_loss(model, batch).item()
    trainer.train()
    with torch.no_grad():
        after = trainer.compute_loss(model, batch).item()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 5 and logged[0] == pytest.approx(before, rel=1e-5)
    assert after < before
    assert all(b < a for a, b in zip(logged, logged[1:]))


# ---- sample weights ---------------------------------------------------------------------------


def test_sample_weighted_loss_equals_hand_weighted_mean(tmp_path):
    weights = [0.5, 2.0, 0.0, 1.0]
    batch = classification_batch(weights)
    model = classifier()
    trainer = ImbalancedTrainer(model=model, args=training_args(tmp_path))
    loss = trainer.compute_loss(model, batch)
    logits, labels = flat_logits_and_labels(model, batch)
    w = torch.tensor(weights)
    expected = (w * F.cross_entropy(logits, labels, reduction="none")).sum() / w.sum()
    torch.testing.assert_close(loss.detach(), expected)
    focal = ImbalancedTrainer(model=model, args=training_args(tmp_path), loss="focal", loss_options={"gamma": 1.0})
    p_target = F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    focal_by_hand = (1 - p_target) * -p_target.log()  # -(1 - p_t) ** gamma * log(p_t), gamma = 1
    torch.testing.assert_close(focal.compute_loss(model, batch).detach(), (w * focal_by_hand).sum() / w.sum())


def test_tagging_sample_weights_weigh_every_token_of_the_sentence(tmp_path):
    batch = tagging_batch()
    batch["sample_weight"] = torch.tensor([1.0, 3.0, 0.0, 0.5])
    model = tagger()
    trainer = ImbalancedTrainer(model=model, args=training_args(tmp_path))
    logits, labels = flat_logits_and_labels(model, batch)
    token_weight = batch["sample_weight"][:, None].expand(4, 8).reshape(-1)
    valid = labels != -100
    per_token = F.cross_entropy(logits[valid], labels[valid], reduction="none")
    expected = (token_weight[valid] * per_token).sum() / token_weight[valid].sum()
    torch.testing.assert_close(trainer.compute_loss(model, batch).detach(), expected)


def _gradients(trainer, model, batch):
    model.zero_grad()
    trainer.compute_loss(model, batch).backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_examples_of_weight_zero_have_no_gradient_effect(tmp_path):
    model = classifier()
    trainer = ImbalancedTrainer(model=model, args=training_args(tmp_path))
    weighted = classification_batch([1.0, 0.0, 1.0, 1.0])
    other = copy.deepcopy(weighted)
    other["labels"][1] = (other["labels"][1] + 1) % 3  # another label and other tokens for the weight-0 example
    other["input_ids"][1, 1:] = 7
    without = {key: value[[0, 2, 3]] for key, value in weighted.items()}
    reference = _gradients(trainer, model, without)
    for batch in (weighted, other):
        for grad, expected in zip(_gradients(trainer, model, batch), reference):
            torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_sample_weight_column_survives_remove_unused_columns(tmp_path):
    datasets = pytest.importorskip("datasets")
    batch = classification_batch([0.5, 2.0, 1.0, 1.0])
    dataset = datasets.Dataset.from_dict(
        {
            "input_ids": batch["input_ids"].tolist(),
            "attention_mask": batch["attention_mask"].tolist(),
            "label": batch["labels"].tolist(),
            "sample_weight": batch["sample_weight"].tolist(),
            "text": ["a", "b", "c", "d"],
        }
    )
    args = training_args(tmp_path, train_sampling_strategy="sequential")
    assert args.remove_unused_columns
    trainer = ImbalancedTrainer(model=classifier(), args=args, train_dataset=dataset)
    loaded = next(iter(trainer.get_train_dataloader()))
    assert "text" not in loaded
    torch.testing.assert_close(loaded["sample_weight"], batch["sample_weight"])
    torch.testing.assert_close(loaded["labels"], batch["labels"])


def _one_sgd_step(tmp_path, model, examples, batch_size, accumulation):
    args = training_args(
        tmp_path,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
    )
    ImbalancedTrainer(model=model, args=args, train_dataset=examples).train()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_gradient_accumulation_normalises_sample_weights_over_the_whole_step(tmp_path):
    # Micro-batches of weight 4 and 0.75: only the whole-step denominator makes 2 x 2 equal 1 x 4.
    examples = as_examples(classification_batch([3.0, 1.0, 0.5, 0.25]))
    start = classifier()
    one_batch = _one_sgd_step(tmp_path, copy.deepcopy(start), examples, batch_size=4, accumulation=1)
    accumulated = _one_sgd_step(tmp_path, copy.deepcopy(start), examples, batch_size=2, accumulation=2)
    unweighted = as_examples(classification_batch())
    unweighted_step = _one_sgd_step(tmp_path, copy.deepcopy(start), unweighted, batch_size=4, accumulation=1)
    initial = torch.cat([p.detach().reshape(-1) for p in start.parameters()])
    assert not torch.equal(one_batch, initial)
    assert (one_batch - unweighted_step).abs().max() > 1e-4  # the weights reached the loss
    torch.testing.assert_close(accumulated, one_batch, rtol=1e-5, atol=1e-6)


# ---- samplers ---------------------------------------------------------------------------------


def imbalanced_classification_examples() -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    labels = torch.tensor([0] * 12 + [1] * 3 + [2])
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(3, 100, (16, 5), generator=generator)
    examples = [
        {"input_ids": input_ids[i], "attention_mask": torch.ones(5, dtype=torch.long), "labels": labels[i]}
        for i in range(16)
    ]
    return examples, labels


@pytest.mark.parametrize("name", ["class_balanced", "square_root"])
def test_trainer_sampler_is_the_core_sampler(tmp_path, name):
    examples, labels = imbalanced_classification_examples()
    args = training_args(tmp_path, seed=123)
    trainer = ImbalancedTrainer(
        model=classifier(), args=args, train_dataset=examples, sampler=name, sampler_options={"num_samples": 4000}
    )
    sampler = trainer._get_train_sampler()
    core = SAMPLERS.build(name, labels=labels, num_classes=3, seed=123, num_samples=4000)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        core.set_epoch(epoch)
        assert list(sampler) == list(core)
    drawn = labels[torch.tensor(list(sampler))]
    proportions = torch.bincount(drawn, minlength=3) / drawn.numel()
    expected = core.class_probabilities(0).float()
    torch.testing.assert_close(proportions, expected, atol=0.03, rtol=0)
    # The data loader the Trainer builds walks the same indices.
    core.set_epoch(0)
    loaded = torch.cat([batch["labels"] for batch in trainer.get_train_dataloader()])
    assert loaded.tolist() == labels[torch.tensor(list(core))].tolist()


def test_sampler_is_refused_for_token_tagging(tmp_path):
    with pytest.raises(ValueError, match="token tagging"):
        ImbalancedTrainer(
            model=tagger(),
            args=training_args(tmp_path),
            train_dataset=as_examples(tagging_batch()),
            sampler="class_balanced",
        )


# ---- bad input --------------------------------------------------------------------------------


def test_unknown_loss_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown loss 'dise'; known: .*cross_entropy.*dice.*focal"):
        ImbalancedTrainer(model=tagger(), args=training_args(tmp_path), loss="dise")


def test_zero_class_count_names_the_class(tmp_path):
    with pytest.raises(ValueError, match=r"class_counts gives 0 for class 1 \('LABEL_1'\).*'ldam'"):
        ImbalancedTrainer(model=tagger(), args=training_args(tmp_path), loss="ldam", class_counts=[5, 0, 3, 1, 1])
    batch = tagging_batch()
    batch["labels"][batch["labels"] == 4] = 0
    with pytest.raises(ValueError, match=r"training set has no example of class 4 \('LABEL_4'\).*'class_balanced'"):
        ImbalancedTrainer(
            model=tagger(), args=training_args(tmp_path), train_dataset=as_examples(batch), loss="class_balanced"
        )
    with pytest.raises(ValueError, match=r"no example of class 4"):
        ImbalancedTrainer(
            model=tagger(),
            args=training_args(tmp_path),
            train_dataset=as_examples(batch),
            loss_options={"weight": "inverse_frequency"},
        )


def test_labels_out_of_range_name_the_value(tmp_path):
    batch = tagging_batch()
    model = tagger()
    trainer = ImbalancedTrainer(model=model, args=training_args(tmp_path), loss="dice")
    batch["labels"][1, 3] = 7
    with pytest.raises(ValueError, match=r"labels contain 7 \(at batch position \(1, 3\)\), outside \[0, 5\)"):
        trainer.compute_loss(model, batch)
    batch["labels"][1, 3] = -3
    with pytest.raises(ValueError, match="labels contain -3"):
        trainer.compute_loss(model, batch)
    training = tagging_batch()
    training["labels"][2, 4] = 9
    with pytest.raises(ValueError, match=r"training set's labels contain 9 \(example 2\), outside \[0, 5\)"):
        ImbalancedTrainer(model=model, args=training_args(tmp_path), train_dataset=as_examples(training), loss="ldam")


def test_float_labels_and_bad_sample_weights_are_refused(tmp_path):
    model = classifier()
    trainer = ImbalancedTrainer(model=model, args=training_args(tmp_path))
    batch = classification_batch()
    batch["labels"] = batch["labels"].float()
    with pytest.raises(TypeError, match="integer class ids"):
        trainer.compute_loss(model, batch)
    with pytest.raises(ValueError, match=r"sample_weight\[1\] = -1.0 must be finite and >= 0"):
        trainer.compute_loss(model, classification_batch([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(batch,\) = \(4,\)"):
        trainer.compute_loss(model, classification_batch([1.0, 1.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "focal", "loss_options": {"gama": 2.0}}, r"loss 'focal' takes no option 'gama'; its options are"),
        ({"loss": "dice", "loss_options": {"weight": "inverse_frequency"}}, r"'dice' takes no class weight"),
        ({"loss_options": {"weight": "inverse"}}, r"'inverse' is not a class weight name"),
        ({"loss_options": {"weight_power": 0.5}}, r"'weight_power'\] goes with weight='inverse_frequency'"),
        ({"loss_options": {"reduction": "sum"}}, r"loss_options\['reduction'\] is not accepted"),
        ({"loss_options": {"weight": [1.0, 2.0]}}, r"one weight per class \(5\)"),
        ({"loss": "ldam"}, r"needs class_counts, and there is no train_dataset"),
        ({"loss": "ldam", "class_counts": [1, 2, 3]}, r"class_counts must have one entry per class \(5\)"),
        ({"sampler": "balanced"}, r"unknown sampler 'balanced'; known: .*class_balanced"),
        ({"sampler_options": {"q": 0.5}}, r"sampler_options .* given without a sampler"),
        ({"compute_loss_func": lambda *a, **k: 0}, r"compute_loss_func replaces the loss"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImbalancedTrainer(model=tagger(), args=training_args(tmp_path), **kwargs)


def test_trainer_settings_that_would_be_ignored_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"label_smoothing_factor=0.1 is ignored"):
        ImbalancedTrainer(model=tagger(), args=training_args(tmp_path, label_smoothing_factor=0.1))
    examples, _ = imbalanced_classification_examples()
    with pytest.raises(ValueError, match=r"replaces args.train_sampling_strategy='group_by_length'"):
        ImbalancedTrainer(
            model=classifier(),
            args=training_args(tmp_path, train_sampling_strategy="group_by_length"),
            train_dataset=examples,
            sampler="class_balanced",
        )
