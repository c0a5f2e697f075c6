"""Greedy continuation of a prompt by llama.cpp (llama-cpp-python): `generate.py MODEL.gguf PROMPT`."""

import sys

from llama_cpp import Llama


def main() -> None:
    path, prompt = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    llm = Llama(model_path=path, n_ctx=128, verbose=False)
    out = llm(prompt, max_tokens=n, temperature=0.0, top_k=1)
    print(f"{prompt}{out['choices'][0]['text']}")


if __name__ == "__main__":
    main()
