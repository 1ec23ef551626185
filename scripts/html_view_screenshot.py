"""Render Re-DocRED dev documents with their gold relations as ``extract --html`` does, check the
page in headless Chromium, and take a screenshot (the picture in docs/html_view.png).

The check runs in the browser, on the fonts it really uses: the page must not scroll
sideways at the given window width, no arc label may be longer than the horizontal part of its
arc (longer labels bend onto the arc's legs or are cut off), and no two labels or names of a
drawing may overlap. Usage (Chromium from Debian's ``chromium`` package)::

    .venv/bin/python scripts/html_view_screenshot.py ../shared/data/redocred/dev_revised.json \\
        ../shared/data/redocred/rel_info.json --docs 2 84 164 --width 1280 -o docs/html_view.png
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import spacy

from spacy_lmrc.corpus import docred_record_to_doc
from spacy_lmrc.corpus.io import load_json_records
from spacy_lmrc.corpus.labels import load_relation_set
from spacy_lmrc.render import render_html

# Runs in the page once it has loaded and writes its findings into <pre id="probe">.
PROBE = """<script>
window.addEventListener("load", () => {
  const problems = [];
  const box = (el) => el.getBoundingClientRect();
  const meets = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom
                          && b.top < a.bottom;
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth) {
    const wide = [...document.body.querySelectorAll("*")].filter(
      (el) => box(el).right > root.clientWidth && !el.querySelector("*"));
    problems.push(`page scrolls sideways: ${root.scrollWidth} > ${root.clientWidth} px, at `
                  + wide.slice(0, 3).map((el) => `'${el.textContent.trim()}'`).join(", "));
  }
  let labels = 0, widest = 0;
  document.querySelectorAll("svg.displacy").forEach((svg, n) => {
    const frame = box(svg);
    const items = [];
    svg.querySelectorAll("g.displacy-arrow").forEach((g) => {
      const text = g.querySelector("text");
      const label = text.textContent.trim();
      const d = g.querySelector("path.displacy-arc").getAttribute("d");
      const xs = d.match(/-?[0-9.]+/g).map(Number);
      const segment = xs[4] - xs[2];  // M x,y x,c e,c e,y: the horizontal part runs x..e
      if (text.getComputedTextLength() > segment)
        problems.push(`row ${n}: label '${label}' (${text.getComputedTextLength().toFixed(0)}`
                      + ` px) is longer than its arc (${segment.toFixed(0)} px)`);
      items.push([label, box(text)]);
      widest = Math.max(widest, text.getComputedTextLength() / label.length);
      labels += 1;
    });
    svg.querySelectorAll("tspan.displacy-word, tspan.displacy-tag").forEach((w) => {
      if (!w.textContent) return;  // the steps without a name
      const b = box(w);
      if (b.left < frame.left || b.right > frame.right)
        problems.push(`row ${n}: '${w.textContent}' sticks out of its drawing`);
      items.push([w.textContent, b]);
    });
    for (let i = 0; i < items.length; i++)
      for (let j = i + 1; j < items.length; j++)
        if (meets(items[i][1], items[j][1]))
          problems.push(`row ${n}: '${items[i][0]}' overlaps '${items[j][0]}'`);
  });
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({problems, labels, widest, height: root.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """The Chromium executable, or exit with what to install."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("Chromium not found: install Debian's package (apt-get install chromium)")


def browse(html_file: Path, width: int, *args: str) -> str:
    """Run headless Chromium on ``html_file`` at ``width`` pixels and return its stdout."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--virtual-time-budget=5000", *args,
               html_file.resolve().as_uri()]
    if not any(a.startswith("--window-size") for a in args):
        command.insert(-1, f"--window-size={width},800")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="DocRED-format JSON (gold relations are drawn)")
    parser.add_argument("rel_info", type=Path, help="relation id -> name file")
    parser.add_argument("--docs", type=int, nargs="+", default=[2, 84, 164],
                        help="indices of the documents to draw")
    parser.add_argument("--width", type=int, default=1024, help="window width in pixels")
    parser.add_argument("-o", "--output", type=Path, help="the PNG to write (else check only)")
    parser.add_argument("--html", type=Path, help="also keep the page here")
    parser.add_argument("--font", help="draw the arcs in this font instead of displaCy's Arial "
                                       "(e.g. 'DejaVu Sans', wider, where Arial is missing)")
    args = parser.parse_args()

    records = load_json_records(args.data, allow_empty=False)
    vocab = spacy.blank("en").vocab
    docs = [docred_record_to_doc(records[i], vocab, path=args.data, index=i) for i in args.docs]
    page = render_html(docs, load_relation_set(args.rel_info))
    if args.font:
        page = page.replace("</style>", f"svg.displacy {{ font-family: '{args.font}' "
                                        "!important; }\n</style>")
    if args.html:
        args.html.write_text(page, encoding="utf8")
    with tempfile.TemporaryDirectory() as tmp:
        probe_file = Path(tmp) / "probe.html"
        probe_file.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf8")
        dom = browse(probe_file, args.width, "--dump-dom")
        found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
        if found is None:
            sys.exit("the check did not run in the browser (no probe output in the page)")
        report = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")
                            .replace("&lt;", "<").replace("&gt;", ">"))
        for problem in report["problems"]:
            print(problem)
        print(f"{len(docs)} documents, {report['labels']} arc labels, page {args.width} x "
              f"{report['height']} px, labels up to {report['widest']:.1f} px a character, "
              f"{len(report['problems'])} problems")
        if args.output:
            page_file = Path(tmp) / "page.html"
            page_file.write_text(page, encoding="utf8")
            browse(page_file, args.width, f"--window-size={args.width},{report['height']}",
                   "--hide-scrollbars", f"--screenshot={args.output.resolve()}")
            print(f"wrote {args.output}")
    sys.exit(1 if report["problems"] else 0)


if __name__ == "__main__":
    main()
