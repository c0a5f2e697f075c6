"""The validation layer: everything qconvert believes about its input, checked before the first
byte is written, each failure one error naming the file, tensor or key, what was expected and
what was found.

One module per kind of input:

- `safetensors`: shard headers and the index, as strict as the safetensors library itself;
- `model`: config.json values and the checkpoint's tensors against what the adapter expects;
- `tokenizer`: vocabularies, merges and special-token ids;
- `quantization`: a pre-quantized checkpoint's quantization_config and FP8 block scales;
- `values`: NaN/Inf and overflow, checked chunk by chunk in the converting pass itself.
"""
