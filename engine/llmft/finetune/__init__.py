"""The fine-tuning engine: typed config, data, chat templates, training recipes, merge.

Modules (each one job): `config` (the YAML config models and their errors), `data` (JSONL loading,
mixing, splitting, tokenisation with loss masks), `templates` (chat templates, where assistant turns
lie, refusals), `preview` (`llmft preview-data`: the tokenisation step alone), `batching`
(batch-size resolution), `model` (model/tokenizer loading, pad token, special tokens, LoRA),
`sft` (the SFT recipe, top to bottom), `outputs` (metrics.jsonl, summary.json, final folders),
`merge` (adapter merging). This file imports nothing so sibling modules load independently.
"""
