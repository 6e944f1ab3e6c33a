"""A tiny BERT sentiment classifier, trained on sentences built from AFINN's lexicon.

The lexicon (`AFINN-en-165.txt`, word <tab> valence from -5 to +5) ships inside the afinn
package; sentences mix a few strongly valenced words with neutral filler, and a sentence is
positive when its words' valences sum above zero. The model and a word-level tokenizer are
configured here, trained for a few seconds on the CPU, and saved with `save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from whylake.jobs.demo_models import SEED

_FILLER = [
    "the",
    "service",
    "was",
    "and",
    "the",
    "food",
    "staff",
    "movie",
    "product",
    "today",
    "really",
    "quite",
    "place",
    "room",
    "delivery",
    "price",
    "story",
    "book",
    "it",
    "this",
    "that",
    "we",
    "our",
    "visit",
    "experience",
    "a",
    "an",
    "very",
]
_WORDS_PER_SIDE = 120


def lexicon() -> dict[str, int]:
    """AFINN-en-165 as word -> valence, single words only."""
    import afinn

    path = Path(afinn.__file__).parent / "data" / "AFINN-en-165.txt"
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        word, _, score = line.rpartition("\t")
        if word and " " not in word and word.isalpha():
            out[word] = int(score)
    return out


def _vocabulary() -> tuple[list[str], list[str]]:
    words = lexicon()
    # Valence 2-3 only: the lexicon's strongest words (4-5) are mostly profanity.
    positive = sorted(w for w, s in words.items() if 2 <= s <= 3)[:_WORDS_PER_SIDE]
    negative = sorted(w for w, s in words.items() if -3 <= s <= -2)[:_WORDS_PER_SIDE]
    return positive, negative


def sentences(n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """n sentences and their labels (1 = the valences sum above zero)."""
    positive, negative = _vocabulary()
    valence = lexicon()
    texts, labels = [], np.empty(n, dtype=np.int64)
    for i in range(n):
        k = int(rng.integers(1, 4))
        picked = [str(rng.choice(positive if rng.random() < 0.5 else negative)) for _ in range(k)]
        filler = [str(w) for w in rng.choice(_FILLER, size=int(rng.integers(3, 8)))]
        words = filler + picked
        rng.shuffle(words)
        total = sum(valence[w] for w in picked)
        if total == 0:
            extra = str(rng.choice(positive))
            words.append(extra)
            total += valence[extra]
        texts.append(" ".join(words))
        labels[i] = int(total > 0)
    return texts, labels


def train_text_classifier(
    folder: Path, n: int = 2400, epochs: int = 4
) -> tuple[Path, pd.DataFrame]:
    """Train, save_pretrained into `folder`, and return it with the training sample."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    rng = np.random.default_rng(SEED)
    texts, labels = sentences(n, rng)
    positive, negative = _vocabulary()
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    for word in [*_FILLER, *positive, *negative]:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a reproducible reduction order
    try:
        model = BertForSequenceClassification(config)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        y = torch.as_tensor(labels)
        order = np.random.default_rng(SEED).permutation(n)
        model.train()
        for _ in range(epochs):
            for start in range(0, n, 64):
                idx = torch.as_tensor(order[start : start + 64])
                out = model(
                    input_ids=enc["input_ids"][idx],
                    attention_mask=enc["attention_mask"][idx],
                    labels=y[idx],
                )
                opt.zero_grad()
                out.loss.backward()
                opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    return folder, pd.DataFrame({"text": texts, "positive": labels})
