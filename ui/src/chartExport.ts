// Export a chart as PNG with no extra dependency: serialise its SVG, draw it on a canvas, `toBlob`.

/** The chart's own drawing: Recharts' largest `svg.recharts-surface` (legend icons are small surfaces too). */
export function chartSvg(root: Element | null): SVGSVGElement | null {
  const found = [...(root?.querySelectorAll<SVGSVGElement>("svg.recharts-surface") ?? [])];
  return found.sort((a, b) => area(b) - area(a))[0] ?? null;
}
const area = (e: Element) => e.clientWidth * e.clientHeight;

export async function svgToPng(svg: SVGSVGElement, title: string, scale = 2): Promise<Blob> {
  const { width, height } = svg.getBoundingClientRect();
  const clone = svg.cloneNode(true) as SVGSVGElement;
  clone.setAttribute("xmlns", "http://www.w3.org/2000/svg");
  clone.setAttribute("width", String(width));
  clone.setAttribute("height", String(height));
  // Text takes the page's font from CSS, which an image loaded on its own does not see.
  clone.setAttribute("style", `font-family:${getComputedStyle(svg).fontFamily};font-size:12px`);
  const url = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(new XMLSerializer().serializeToString(clone));
  const img = new Image();
  await new Promise<void>((resolve, reject) => {
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("the chart could not be drawn as an image"));
    img.src = url;
  });
  const band = 28; // the chart's title above it: the card's heading is not part of the SVG
  const canvas = document.createElement("canvas");
  canvas.width = Math.ceil(width * scale);
  canvas.height = Math.ceil((height + band) * scale);
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("this browser cannot draw on a canvas");
  ctx.scale(scale, scale);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height + band);
  ctx.fillStyle = "#111827";
  ctx.font = `600 14px ${getComputedStyle(svg).fontFamily}`;
  ctx.fillText(title, 8, 19);
  ctx.drawImage(img, 0, band, width, height);
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the PNG could not be encoded"))), "image/png"));
}

export function downloadBlob(name: string, blob: Blob): void {
  const url = URL.createObjectURL(blob);
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000); // some browsers read the URL after click() returns
}
