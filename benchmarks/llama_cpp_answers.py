"""Worker of answer_throughput.py: llama.cpp (llama-cpp-python) answers the same prompts.

Runs in its own venv (answer_throughput.py makes it: llama-cpp-python is an sdist
that builds llama.cpp from source). Reads one JSON object on stdin:
``{"gguf", "prompts" (token id lists, BOS included), "max_new_tokens", "threads",
"repeats"}``, and writes ``{"answers", "seconds_all", "version"}`` on stdout.
Greedy (temperature 0, no repetition penalty), stop at the line end, as
`Generator.generate` decodes; prompts go in as token ids so both engines read
exactly the same input.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import llama_cpp

    job = json.load(sys.stdin)
    longest = max(len(p) for p in job["prompts"])
    llm = llama_cpp.Llama(model_path=job["gguf"], n_ctx=longest + job["max_new_tokens"] + 8,
                          n_threads=job["threads"], n_threads_batch=job["threads"],
                          n_batch=512, verbose=False)

    def answer(prompt: list[int]) -> str:
        out = llm.create_completion(prompt, max_tokens=job["max_new_tokens"], temperature=0.0,
                                    repeat_penalty=1.0, stop=["\n"])
        return out["choices"][0]["text"].strip()

    answer(job["prompts"][0])  # warm-up
    seconds, answers = [], []
    for _ in range(job["repeats"]):
        started = time.perf_counter()
        answers = [answer(p) for p in job["prompts"]]
        seconds.append(time.perf_counter() - started)
    json.dump({"answers": answers, "seconds_all": seconds,
               "version": llama_cpp.__version__}, sys.stdout)


if __name__ == "__main__":
    main()
