"""A client gone wild, in a process of its own (so the test measuring its
neighbours is not slowed by its sending): `python -m tests.flooder URL TOKEN
MATCH_ID COUNT` sends COUNT receipt frames for its match and COUNT frames for
random match ids, as fast as the socket takes them, and prints one JSON line:
frames sent, the close code it got, the error codes it was sent."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import aiohttp
import orjson


async def flood(url: str, token: str, match_id: str, count: int) -> dict[str, object]:
    sent, codes = 0, []
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{url}/ws?token={token}")

        async def read() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    frame = orjson.loads(msg.data)
                    if frame.get("type") == "error":
                        codes.append(frame["code"])

        reader = asyncio.get_running_loop().create_task(read())
        # Encoded before the flood starts: the flood is the socket's, not
        # this process's JSON encoder's.
        floods = [
            (orjson.dumps({"type": "read", "match_id": match_id, "seq": i}).decode(),
             orjson.dumps({"type": "typing", "match_id": str(uuid.uuid4()),
                           "state": True}).decode())
            for i in range(count)
        ]
        print("connected", flush=True)
        for i, frames in enumerate(floods):
            try:
                for frame in frames:
                    await ws.send_str(frame)
                    sent += 1
            except (ConnectionError, RuntimeError):
                break
            if ws.closed:
                break
            if i % 100 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(reader, 60)
        return {"sent": sent, "close_code": ws.close_code, "codes": codes}


if __name__ == "__main__":
    # It stands for a client on another machine: at the lowest priority, its
    # own sending does not take this machine's cores from the node it floods.
    os.nice(19)
    url, token, match_id, count = sys.argv[1:5]
    print(orjson.dumps(asyncio.run(flood(url, token, match_id, int(count)))).decode())
