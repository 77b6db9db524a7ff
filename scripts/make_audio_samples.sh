#!/usr/bin/env bash
# Regenerates audio_samples/*.flac and audio_samples/manifest.json from real speech recordings in
# Debian's `pocketsphinx-testdata` package (BSD-2-Clause, see audio_samples/SOURCES.md).
#
# Needs (Debian/Ubuntu):  apt-get install -y pocketsphinx-testdata sox python3
#
# Every output is 16 kHz, mono, 16-bit FLAC. The source .wav files are already 16 kHz mono 16-bit;
# goforward.raw is headerless 16 kHz 16-bit signed little-endian mono PCM (pocketsphinx's own tests
# decode it with "-samprate 16000 -input_endian little"). No gain, filtering or trimming is applied.
#
# The long clip (> 60 s) concatenates every recording of the package that comes with a reference
# transcript (11 recordings, ~37 s) with 0.5 s of digital silence between recordings; the package holds
# too little transcribed speech for 60 s, so the LibriVox passage and the command appear twice (at the start
# and at the end), the card utterances once. (Repeating the short, repetitive card utterances as well made
# whisper tiny.en fall back to temperature sampling on some runs; this order decodes stably.)
#
# Reference transcripts are written below in normal case and punctuation; the script checks each one
# against the package's own transcript for the same file id (after lower-casing and removing
# punctuation) and fails on any mismatch.
#
# Usage: scripts/make_audio_samples.sh [output-dir]   (default: audio_samples/ of this checkout)
set -euo pipefail

DATA=${POCKETSPHINX_TESTDATA:-/usr/share/pocketsphinx/test/data}
OUT=${1:-$(cd "$(dirname "$0")/.." && pwd)/audio_samples}
for tool in sox python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install -y $tool)" >&2; exit 1; }
done
[ -d "$DATA/librivox" ] || { echo "error: $DATA not found (apt-get install -y pocketsphinx-testdata)" >&2; exit 1; }
VERSION=$(dpkg-query -W -f='${Version}' pocketsphinx-testdata 2>/dev/null || echo unknown)
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

LV=sense_and_sensibility_01_austen_64kb
# Normalise every source recording to a 16 kHz mono 16-bit WAV in $TMP, named by its id.
for n in 0870 0880 0890 0920 0930; do
    sox -D "$DATA/librivox/$LV-$n.wav" -r 16000 -c 1 -b 16 -e signed-integer "$TMP/librivox-$n.wav"
done
for n in 001 002 003 004 005; do
    sox -D "$DATA/cards/$n.wav" -r 16000 -c 1 -b 16 -e signed-integer "$TMP/cards-$n.wav"
done
sox -D -t raw -r 16000 -e signed-integer -b 16 -c 1 -L "$DATA/goforward.raw" "$TMP/goforward.wav"
sox -D -n -r 16000 -c 1 -b 16 -e signed-integer "$TMP/silence.wav" trim 0 0.5

# Short clips: straight conversions.
sox -D "$TMP/librivox-0870.wav" "$OUT/librivox_sense_and_sensibility_0870.flac"
sox -D "$TMP/librivox-0890.wav" "$OUT/librivox_sense_and_sensibility_0890.flac"
sox -D "$TMP/goforward.wav" "$OUT/pocketsphinx_goforward.flac"
sox -D "$TMP/cards-005.wav" "$OUT/cards_005.flac"

# Long clip: the LibriVox passage, the command, the five card utterances, the command again, the passage
# again (every recording that has a reference transcript; 17 recordings, 0.5 s of silence between them).
NARRATIVE=(librivox-0870 librivox-0880 librivox-0890 librivox-0920 librivox-0930)
CARDS=(cards-001 cards-002 cards-003 cards-004 cards-005)
LONG_IDS=("${NARRATIVE[@]}" goforward "${CARDS[@]}" goforward "${NARRATIVE[@]}")
inputs=()
for i in "${!LONG_IDS[@]}"; do
    [ "$i" -gt 0 ] && inputs+=("$TMP/silence.wav")
    inputs+=("$TMP/${LONG_IDS[$i]}.wav")
done
sox -D "${inputs[@]}" "$OUT/long_pocketsphinx_concat.flac"

DATA="$DATA" OUT="$OUT" VERSION="$VERSION" LONG_IDS="${LONG_IDS[*]}" python3 - <<'EOF'
import json, os, re, subprocess

data, out, version = os.environ["DATA"], os.environ["OUT"], os.environ["VERSION"]
long_ids = os.environ["LONG_IDS"].split()
pkg = f"pocketsphinx-testdata {version}"
lv = "sense_and_sensibility_01_austen_64kb"

# id -> (path in the package, transcript in normal case)
SOURCES = {
    "librivox-0870": (f"librivox/{lv}-0870.wav",
                      "And Mr. John Dashwood had then leisure to consider how much there might be prudently "
                      "in his power to do for them."),
    "librivox-0880": (f"librivox/{lv}-0880.wav", "He was not an ill-disposed young man,"),
    "librivox-0890": (f"librivox/{lv}-0890.wav",
                      "unless to be rather cold-hearted and rather selfish is to be ill-disposed."),
    "librivox-0920": (f"librivox/{lv}-0920.wav",
                      "Had he married a more a amiable woman, he might have been made still more respectable "
                      "than he was;"),
    "librivox-0930": (f"librivox/{lv}-0930.wav", "he might even have been made amiable himself."),
    "goforward": ("goforward.raw", "Go forward ten meters."),
    "cards-001": ("cards/001.wav", "Ten of clubs."),
    "cards-002": ("cards/002.wav", "Four, queen of clubs."),
    "cards-003": ("cards/003.wav", "Seven of clubs."),
    "cards-004": ("cards/004.wav", "Five, five."),
    "cards-005": ("cards/005.wav", "Eight of spades, four of clubs, seven of hearts."),
}


def package_transcripts() -> dict:
    """The package's own lower-case references, keyed like SOURCES."""
    refs = {}
    for path, prefix in (("librivox/transcription", "librivox-"), ("cards/cards.transcription", "cards-")):
        for line in open(os.path.join(data, path)):
            m = re.match(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*$", line)
            if m:
                key = prefix + (m.group(2).rsplit("-", 1)[-1] if prefix == "librivox-" else m.group(2))
                refs[key] = m.group(1)
    # goforward.raw has no transcription file; pocketsphinx's tests assert this hypothesis for it
    # and goforward.gram is the grammar "go forward ten meters".
    refs["goforward"] = "go forward ten meters"
    return refs


def simplify(text: str) -> str:
    text = text.lower().replace("mr.", "mister").replace("-", " ")
    return " ".join(re.sub(r"[^a-z' ]", " ", text).split())


refs = package_transcripts()
for key, (path, text) in SOURCES.items():
    assert simplify(text) == simplify(refs[key]), (key, text, refs[key])


def duration(name: str) -> float:
    return float(subprocess.check_output(["soxi", "-D", os.path.join(out, name)], text=True))


LICENSE = "BSD-2-Clause (pocketsphinx-testdata)"
manifest = []
for name, key in (("librivox_sense_and_sensibility_0870.flac", "librivox-0870"),
                  ("librivox_sense_and_sensibility_0890.flac", "librivox-0890"),
                  ("pocketsphinx_goforward.flac", "goforward"),
                  ("cards_005.flac", "cards-005")):
    text = SOURCES[key][1]
    manifest.append({"file": name, "text": text[0].upper() + text[1:], "duration_s": round(duration(name), 4),
                     "source": f"{pkg}: /usr/share/pocketsphinx/test/data/{SOURCES[key][0]}", "license": LICENSE})


def join(texts):
    """Join sentence fragments, capitalising after a full stop."""
    result = ""
    for text in texts:
        if result and result.rstrip()[-1] in ".?!":
            text = text[0].upper() + text[1:]
        result = f"{result} {text}" if result else text
    return result


long_name = "long_pocketsphinx_concat.flac"
manifest.append({
    "file": long_name,
    "text": join(SOURCES[k][1] for k in long_ids),
    "duration_s": round(duration(long_name), 4),
    "source": (f"{pkg}: concatenation, with 0.5 s of silence between recordings, of "
               + ", ".join(SOURCES[k][0] for k in long_ids) + " (under /usr/share/pocketsphinx/test/data/)"),
    "license": LICENSE,
})
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
for entry in manifest:
    print(f"{entry['file']}: {entry['duration_s']:.2f} s")
EOF
du -sh "$OUT"
