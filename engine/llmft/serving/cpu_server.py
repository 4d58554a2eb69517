"""A small OpenAI-compatible chat server on the CPU: `llmft serve MODEL_DIR`.

vLLM ships CUDA builds only; on a CPU machine the local runner serves the same
model folder through this server instead, on the same port with the same API
subset the tutorial uses: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions`
(non-streaming, or streaming as one chunk). LoRA adapters can be served by name on
top of the base model, like vLLM's `--lora-modules name=path`.

A sequence classifier (a folder whose config.json names a `*ForSequenceClassification`
architecture, e.g. a `task: sequence-classification` run's checkpoint-final/) is served with
vLLM's classification API instead: `POST /classify` with `{"model": NAME, "input": TEXT or
[TEXT, ...]}` answers `{"object": "list", "data": [{"index", "label", "probs", "num_classes"}],
"usage": {...}}`, the label names from the model's `id2label` (docs/tasks.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from llmft.errors import UserError

log = logging.getLogger("llmft.serve")


class ChatModel:
    """The base model, optional adapters, and one lock: generation runs one request at a time."""

    def __init__(self, model_dir: Path, served_name: str, adapters: dict[str, Path]):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        if not (Path(model_dir) / "config.json").is_file():
            raise UserError(f"{model_dir} is not a model folder (no config.json)")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not self.tokenizer.chat_template:
            raise UserError(f"{model_dir} has no chat template: /v1/chat/completions needs one")
        # The causal LM, or with adapters the PeftModel wrapping it (transformers' annotations of
        # generate() and of the adapter methods fit neither view of it).
        self.model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.served_name = served_name
        self.adapters = list(adapters)
        if adapters:
            from peft import PeftModel

            first, *rest = adapters.items()
            self.model = PeftModel.from_pretrained(self.model, first[1], adapter_name=first[0])
            for name, path in rest:
                self.model.load_adapter(path, adapter_name=name)
        self.model.eval()
        self.lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return [self.served_name, *self.adapters]

    def chat(self, request: dict) -> dict:
        name = request.get("model") or self.served_name
        if name not in self.names:
            raise LookupError(f"model {name!r} is not served here; available: {', '.join(self.names)}")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list")
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        max_tokens = int(request.get("max_tokens") or request.get("max_completion_tokens") or 128)
        temperature = float(request.get("temperature", 0.0) or 0.0)
        options: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            options.update(temperature=temperature, top_p=float(request.get("top_p", 1.0)))
        with self.lock, self.torch.no_grad():
            if self.adapters:
                if name in self.adapters:
                    self.model.enable_adapter_layers()
                    self.model.set_adapter(name)
                else:
                    self.model.disable_adapter_layers()
            output = self.model.generate(**inputs, **options)
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        eos_ids = self.model.generation_config.eos_token_id
        eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
        finished = bool(len(new_tokens)) and int(new_tokens[-1]) in eos_ids
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop" if finished else "length",
                }
            ],
            "usage": {
                "prompt_tokens": int(inputs["input_ids"].shape[1]),
                "completion_tokens": int(len(new_tokens)),
                "total_tokens": int(inputs["input_ids"].shape[1] + len(new_tokens)),
            },
        }


def is_classifier(model_dir: Path) -> bool:
    """Whether the model folder holds a sequence classifier (by its config.json's architectures)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return any(name.endswith("ForSequenceClassification") for name in config.get("architectures") or [])


class ClassifierModel:
    """A sequence classifier answering vLLM's `/classify` requests, one batch at a time."""

    def __init__(self, model_dir: Path, served_name: str):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model: Any = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        self.model.eval()
        self.served_name = served_name
        self.names = [served_name]
        self.lock = threading.Lock()

    def classify(self, request: dict) -> dict:
        name = request.get("model") or self.served_name
        if name not in self.names:
            raise LookupError(f"model {name!r} is not served here; available: {', '.join(self.names)}")
        texts = request.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(text, str) and text for text in texts):
            raise ValueError("`input` must be a non-empty string or a non-empty list of non-empty strings")
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True)
        with self.lock, self.torch.no_grad():
            probabilities = self.model(**inputs).logits.float().softmax(dim=-1)
        id2label = self.model.config.id2label
        tokens = int(inputs["attention_mask"].sum())
        return {
            "id": f"classify-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": name,
            "data": [
                {
                    "index": index,
                    "label": id2label[int(row.argmax())],
                    "probs": [round(float(value), 6) for value in row],
                    "num_classes": int(row.shape[0]),
                }
                for index, row in enumerate(probabilities)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }


def make_handler(model: ChatModel | ClassifierModel):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # route access logs through logging
            log.info("%s %s", self.address_string(), fmt % args)

        def _send(self, status: int, body: dict | str, content_type: str = "application/json") -> None:
            data = (json.dumps(body) if isinstance(body, dict) else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self._send(200, "", "text/plain")
            elif self.path == "/v1/models":
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": name, "object": "model", "owned_by": "llmft"} for name in model.names],
                    },
                )
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            classifier = isinstance(model, ClassifierModel)
            route = "/classify" if classifier else "/v1/chat/completions"
            if self.path != route:
                what = "a sequence classifier" if classifier else "a chat model"
                self._send(
                    404, {"error": {"message": f"no route {self.path}: this server serves {what} (POST {route})"}}
                )
                return
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if isinstance(model, ClassifierModel):
                    self._send(200, model.classify(request))
                    return
                response = model.chat(request)
            except LookupError as error:
                self._send(404, {"error": {"message": str(error), "type": "NotFoundError"}})
                return
            except (ValueError, TypeError) as error:
                self._send(400, {"error": {"message": str(error), "type": "BadRequestError"}})
                return
            if request.get("stream"):
                choice = response["choices"][0]
                chunk = {
                    **response,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": choice["message"], "finish_reason": choice["finish_reason"]}],
                }
                self._send(200, f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n", "text/event-stream")
            else:
                self._send(200, response)

    return Handler


def serve(model_dir: Path, served_name: str, host: str, port: int, adapters: dict[str, Path]) -> None:
    model: ChatModel | ClassifierModel
    if is_classifier(model_dir):
        if adapters:
            raise UserError("a classifier is served merged (llmft merge-adapter); --lora-module is for chat models")
        model = ClassifierModel(model_dir, served_name)
        api = "vLLM's POST /classify"
    else:
        model = ChatModel(model_dir, served_name, adapters)
        api = "OpenAI-compatible"
    server = ThreadingHTTPServer((host, port), make_handler(model))
    log.info("serving %s as %r on http://%s:%d (%s, CPU)", model_dir, served_name, host, port, api)
    try:
        server.serve_forever()
    finally:
        server.server_close()
