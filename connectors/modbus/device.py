"""One Modbus unit: polls its groups over its (possibly shared) link and decodes the answers.

A unit that stops answering is backed off (exponentially, up to backoff_max_s) so it never holds
the link from the units that do answer; meanwhile its tags are reported bad with the reason, and
it is retried on schedule and recovers by itself. A unit that refuses a merged read as an
illegal address first loses gap-spanning reads (only adjacent tags stay merged), then, if it
refuses those too, is polled with one request per tag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from connectors.backoff import Backoff
from connectors.modbus.codec import (
    NUMERIC_TYPES,
    DecodeError,
    NumberField,
    compile_bit_decoder,
    compile_block_decoder,
    compile_number_decoder,
    decode_string,
)
from connectors.modbus.config import BIT_AREAS, ModbusDeviceConfig, ModbusTag
from connectors.modbus.link import Answer, ModbusLink, ModbusRefused, NoAnswer
from connectors.modbus.planner import PollGroup, Read, plan
from connectors.modbus.responses import registers_format
from connectors.sample import Sample, Value

log = logging.getLogger(__name__)
new = tuple.__new__
_ADDRESS_ERRORS = (2, 3)
TagDecoder = Callable[[bytes], Value]  # a read's raw answer -> one tag's value


class CompiledRead(NamedTuple):
    names: list[str]  # tags decoded together by `block`, in its output order
    block: Callable[[bytes], list[Value]]  # raw answer -> their values
    scaled: list[tuple[int, float, float]]  # (index into names, scale, offset) to apply
    rest: list[tuple[str, TagDecoder]]  # tags decoded one by one (strings, bits, word-swapped numbers)


class ModbusDevice:
    def __init__(self, config: ModbusDeviceConfig, link: ModbusLink) -> None:
        self.config = config
        self.id = config.id
        self.link = link
        self.per_tag = not config.coalesce
        self.max_gap = config.max_gap
        self.groups: list[PollGroup] = []
        # decoders of each planned read, by id(): hashing a Read would hash every tag model in it
        self._current: dict[float, PollGroup] = {}
        self._compiled: dict[int, CompiledRead] = {}
        self._replan()
        self._backoff = Backoff(initial_s=min(1.0, config.backoff_max_s), maximum_s=config.backoff_max_s)

    def decode(self, tag: ModbusTag, words: list[int]) -> Value:
        """One tag's value from its own registers (or bit), by the decoder its polls use."""
        if tag.area in BIT_AREAS:
            return bool(words[0])
        if len(words) != tag.width:
            raise DecodeError(f"{tag.type} takes {tag.width} registers, got {len(words)}")
        return self._tag_decoder(tag, 0)(registers_format(len(words)).pack(*words))

    def _tag_decoder(self, tag: ModbusTag, offset: int) -> TagDecoder:
        """Decoder of one tag of a register read, worked out once per plan."""
        if tag.type == "bool":
            assert tag.bit is not None
            return compile_bit_decoder(offset, tag.bit)
        if tag.type in NUMERIC_TYPES:
            number = compile_number_decoder(tag.type, self.config.tag_order(tag), offset)
            if tag.scale == 1.0 and tag.offset == 0.0:
                return number
            scale, shift = tag.scale, tag.offset
            return lambda raw: number(raw) * scale + shift
        words, start = registers_format(tag.width), 2 * offset
        order, encoding = tag.string_order, tag.encoding
        return lambda raw: decode_string(list(words.unpack_from(raw, start)), order, encoding)

    def _compile(self, read: Read) -> CompiledRead:
        """How to turn one read's answer into values: bits picked by offset; numbers that one
        struct format can express decoded together; every other tag by its own decoder."""
        offsets = [self.config.protocol_address(t) - read.start for t in read.tags]
        if read.area in BIT_AREAS:

            def bits(raw: bytes) -> list[Value]:
                flags = int.from_bytes(raw, "little")
                return [bool(flags >> o & 1) for o in offsets]

            return CompiledRead([t.name for t in read.tags], bits, [], [])
        numbers: list[NumberField] = [
            (t.type, self.config.tag_order(t), o) if t.type in NUMERIC_TYPES else ("string", "ABCD", o)
            for t, o in zip(read.tags, offsets, strict=True)
        ]
        taken, block = compile_block_decoder(numbers)
        tags = [read.tags[i] for i in taken]
        scaled = [(k, t.scale, t.offset) for k, t in enumerate(tags) if t.scale != 1.0 or t.offset != 0.0]
        left = set(range(len(read.tags))) - set(taken)
        rest = [(read.tags[i].name, self._tag_decoder(read.tags[i], offsets[i])) for i in sorted(left)]
        return CompiledRead([t.name for t in tags], block, scaled, rest)

    def _replan(self) -> None:
        self.groups = plan(self.config, self.per_tag, self.max_gap)
        self._current = {g.interval_s: g for g in self.groups}
        self._compiled = {id(r): self._compile(r) for g in self.groups for r in g.reads}

    def _samples(self, read: Read, answer: Answer, now: datetime) -> list[Sample]:
        compiled = self._compiled.get(id(read)) or self._compile(read)
        raw = answer.raw
        values = compiled.block(raw)
        for k, scale, shift in compiled.scaled:
            values[k] = values[k] * scale + shift
        device = self.id
        # tuple.__new__ with every field skips the NamedTuple constructor's Python frame: one per tag
        out = [
            new(Sample, (device, name, value, True, now, None, None))
            for name, value in zip(compiled.names, values, strict=True)
        ]
        for name, decode in compiled.rest:
            try:
                out.append(new(Sample, (device, name, decode(raw), True, now, None, None)))
            except DecodeError as e:
                out.append(Sample.bad(device, name, now, f"decode: {e}"))
        return out

    async def read_group(self, group: PollGroup, now_fn: Callable[[], datetime]) -> list[Sample]:
        group = self._current.get(group.interval_s, group)  # the caller may hold a group from before a re-plan
        if not self._backoff.ready():
            return [Sample.bad(self.id, t.name, now_fn(), "device not answering; waiting to retry") for t in group.tags]
        samples: list[Sample] = []
        for i, read in enumerate(group.reads):
            try:
                answer = await self.link.read_answer(self.config.unit, read.area, read.start, read.count)
            except ModbusRefused as e:
                if e.code in _ADDRESS_ERRORS and len(read.tags) > 1 and not self.per_tag:
                    self._plan_smaller_reads(read)
                    samples += await self._per_tag(read, now_fn)
                    continue
                if e.unit_absent:
                    return samples + self._give_up(group.reads[i:], now_fn(), str(e))
                samples += [Sample.bad(self.id, t.name, now_fn(), str(e)) for t in read.tags]
                continue
            except NoAnswer as e:
                return samples + self._give_up(group.reads[i:], now_fn(), f"no answer: {e}")
            samples += self._samples(read, answer, now_fn())
        self._backoff.succeeded()
        return samples

    def _plan_smaller_reads(self, refused: Read) -> None:
        if self.max_gap > 0:
            self.max_gap = 0
            step = "merging only adjacent tags"
        else:
            self.per_tag = True
            step = "one request per tag"
        log.warning(
            "device refused a merged read; %s",
            step,
            extra={"device": self.id, "area": refused.area, "start": refused.start, "count": refused.count},
        )
        self._replan()

    async def _per_tag(self, read: Read, now_fn: Callable[[], datetime]) -> list[Sample]:
        out = []
        for tag in read.tags:
            single = Read(read.area, self.config.protocol_address(tag), tag.width, (tag,))
            try:
                answer = await self.link.read_answer(self.config.unit, single.area, single.start, single.count)
                out += self._samples(single, answer, now_fn())
            except (ModbusRefused, NoAnswer) as e:
                out.append(Sample.bad(self.id, tag.name, now_fn(), str(e)))
        return out

    def _give_up(self, reads: tuple[Read, ...] | list[Read], now: datetime, reason: str) -> list[Sample]:
        """Stop this cycle so a silent unit does not hold the link; back off before trying again."""
        delay = self._backoff.failed()
        log.warning("modbus device not answering", extra={"device": self.id, "reason": reason, "retry_s": delay})
        return [Sample.bad(self.id, t.name, now, reason) for r in reads for t in r.tags]

    async def read(self, now_fn: Callable[[], datetime]) -> list[Sample]:
        """Every tag once (all groups), e.g. for `edgeproof read`."""
        out: list[Sample] = []
        for group in list(self.groups):
            out += await self.read_group(group, now_fn)
        return out

    async def close(self) -> None:
        self.link.close()
