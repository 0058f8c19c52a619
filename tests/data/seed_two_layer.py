# Together's 2-layer MoA recipe (../shared/seed/), verbatim: it must run unchanged against `moa-lab serve`.
import asyncio

from together import AsyncTogether, Together

client = Together()
async_client = AsyncTogether()

user_prompt = "在旧金山有哪些有趣的活动？"
reference_models = [
    "Qwen/Qwen2-72B-Instruct",
    "Qwen/Qwen1.5-72B-Chat",
    "mistralai/Mixtral-8x22B-Instruct-v0.1",
    "databricks/dbrx-instruct",
]
aggregator_model = "mistralai/Mixtral-8x22B-Instruct-v0.1"
aggregator_system_prompt = """你收到了一组来自不同开源模型的响应，任务是将这些响应合成一个高质量的回复。请仔细评估这些响应，辨别其中可能存在的偏见或错误。确保你的回应不仅仅是重复这些答案，而是提供一个经过提炼、准确和全面的回复。请确保你的回答结构清晰、连贯，并符合最高的准确性和可靠性标准。

模型的响应："""


async def run_llm(model):
    """运行单个 LLM 调用。"""
    response = await async_client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": user_prompt}],
        temperature=0.7,
        max_tokens=512,
    )
    print(model)
    return response.choices[0].message.content


async def main():
    results = await asyncio.gather(*[run_llm(model) for model in reference_models])

    finalStream = client.chat.completions.create(
        model=aggregator_model,
        messages=[
            {"role": "system", "content": aggregator_system_prompt},
            {"role": "user", "content": ",".join(str(element) for element in results)},
        ],
        stream=True,
    )

    for chunk in finalStream:
        print(chunk.choices[0].delta.content or "", end="", flush=True)


asyncio.run(main())
