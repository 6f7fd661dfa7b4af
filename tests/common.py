"""Tiny models built from configs, shared by the tests (no download ever)."""

import torch


def build_tiny_bert(num_labels: int = 2, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=num_labels,
    )
    return BertForSequenceClassification(config)


def build_tiny_vit(num_labels: int = 3, seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=8,
        patch_size=4, num_channels=1, num_labels=num_labels,
    )
    return ViTForImageClassification(config)


def build_tiny_gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))


def build_mlp(seed: int = 0, width: int = 32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))


def text_dataset(n: int = 32, seq: int = 8, vocab: int = 64, num_labels: int = 2, seed: int = 0):
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    return Dataset.from_dict(
        {
            "input_ids": torch.randint(0, vocab, (n, seq), generator=g).tolist(),
            "labels": torch.randint(0, num_labels, (n,), generator=g).tolist(),
        }
    )


WORDS = ("the cat dog sat ran on a mat rug big small red blue good bad yes no i you like it is not very happy sad "
         "question answer what why").split()


def build_tiny_tokenizer():
    """A word-level tokenizer over `WORDS`, built offline (no download), with pad/eos/bos/unk tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def build_tiny_llama(seed: int = 0, vocab_size: int = len(WORDS) + 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    return LlamaForCausalLM(config)


def sentences(n: int = 16, seed: int = 0, length: int = 6) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (length,), generator=g).tolist()) for _ in range(n)]
