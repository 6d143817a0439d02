// An SVG bar chart of the README table, or of any groups of bars whose height is a share of a
// reference: one group per (case, mode), one bar per column. Every group has its own legend,
// since groups differ in their columns (the varlen table's are not the dense table's), and a
// label keeps its colour in every group. The axis stops at AXIS_MAX_PERCENT so that the bars
// near 100%, where the comparisons are, stay readable; a taller bar is drawn broken at the top
// with its share written above it.
export interface ChartBar {
  label: string;
  /** Bar height, % of the group's reference. */
  percent: number;
  /** Written above the bar (its iter/s, or its share). */
  note: string;
}

export interface ChartGroup {
  /** Lines split at '\n'. */
  title: string;
  bars: ChartBar[];
}

export const AXIS_MAX_PERCENT = 110;

export const PALETTE = [
  '#9e9e9e',
  '#5c6bc0',
  '#26a69a',
  '#ef6c00',
  '#8e24aa',
  '#616161',
  '#42a5f5',
  '#66bb6a',
  '#ffa726',
  '#ec407a',
];
const BAR_W = 34,
  BAR_GAP = 10,
  GROUP_GAP = 40,
  LEFT = 50,
  TOP = 84,
  PLOT_H = 260,
  LINE = 14,
  SWATCH = 12;
/** Estimated text widths per character: the 11px body text, the bold 15px title. */
const CHAR_W = 6.2,
  TITLE_CHAR_W = 9;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Colours by label, in order of first appearance, so a column looks the same in every group. */
function colours(groups: ChartGroup[], palette: readonly string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const g of groups)
    for (const b of g.bars) if (!map.has(b.label)) map.set(b.label, palette[map.size % palette.length]!);
  return map;
}

/** Group width: its bars, its legend or its title, whichever is widest. */
function groupWidth(g: ChartGroup): number {
  const bars = g.bars.length * (BAR_W + BAR_GAP) - BAR_GAP;
  const legend = Math.max(0, ...g.bars.map((b) => SWATCH + 4 + b.label.length * CHAR_W));
  const title = Math.max(...g.title.split('\n').map((l) => l.length * CHAR_W));
  return Math.max(bars, legend, title) + GROUP_GAP;
}

/** `palette`: colours given to the labels in order of first appearance. */
export function barChart(
  title: string,
  subtitle: string,
  groups: ChartGroup[],
  palette: readonly string[] = PALETTE,
): string {
  const colour = colours(groups, palette);
  const y = (pct: number) =>
    TOP + PLOT_H - (Math.max(0, Math.min(pct, AXIS_MAX_PERCENT)) / AXIS_MAX_PERCENT) * PLOT_H;
  const widths = groups.map(groupWidth);
  const titleLines = Math.max(1, ...groups.map((g) => g.title.split('\n').length));
  const legendTop = TOP + PLOT_H + 18 + titleLines * LINE;
  const clipped = groups.some((g) => g.bars.some((b) => b.percent > AXIS_MAX_PERCENT));
  const sub = `${subtitle}${clipped ? `; a bar past ${AXIS_MAX_PERCENT}% is drawn broken, its share written above it` : ''}`;
  const width =
    Math.max(
      widths.reduce((a, b) => a + b, 0),
      title.length * TITLE_CHAR_W,
      sub.length * CHAR_W,
    ) +
    LEFT +
    20;
  const height = legendTop + Math.max(0, ...groups.map((g) => g.bars.length)) * LINE + 16;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    '<rect width="100%" height="100%" fill="white"/>',
    `<text x="${LEFT}" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${LEFT}" y="44" fill="#555">${esc(sub)}</text>`,
  ];
  for (const pct of [0, 25, 50, 75, 100]) {
    parts.push(`<line x1="${LEFT}" x2="${width - 10}" y1="${y(pct)}" y2="${y(pct)}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${LEFT - 6}" y="${y(pct) + 4}" text-anchor="end">${pct}%</text>`);
  }
  let x0 = LEFT + GROUP_GAP / 2;
  groups.forEach((g, gi) => {
    parts.push(`<g class="group" data-title="${esc(g.title)}">`);
    g.bars.forEach((b, bi) => {
      const x = x0 + bi * (BAR_W + BAR_GAP),
        top = y(b.percent),
        fill = colour.get(b.label)!;
      const over = b.percent > AXIS_MAX_PERCENT;
      parts.push(`<g class="bar${over ? ' clipped' : ''}" data-label="${esc(b.label)}">`);
      const share = `${b.percent.toFixed(1)}%`;
      parts.push(`<title>${esc(`${b.label}: ${b.note}${b.note === share ? '' : ` (${share})`}`)}</title>`);
      parts.push(
        `<rect x="${x}" y="${top}" width="${BAR_W}" height="${TOP + PLOT_H - top}" fill="${fill}"/>`,
      );
      if (over) {
        // Two white strokes across the bar near its top: the usual mark of a broken axis.
        for (const dy of [10, 16])
          parts.push(
            `<path class="break" d="M${x - 2},${top + dy + 4} L${x + BAR_W + 2},${top + dy - 4}" stroke="white" stroke-width="3"/>`,
          );
        parts.push(
          `<text x="${x + BAR_W / 2}" y="${top - 18}" text-anchor="middle" fill="#c62828" font-weight="bold">↑${b.percent.toFixed(1)}%</text>`,
        );
      }
      parts.push(`<text x="${x + BAR_W / 2}" y="${top - 4}" text-anchor="middle">${esc(b.note)}</text>`);
      parts.push('</g>');
    });
    const cx = x0 + (widths[gi]! - GROUP_GAP) / 2;
    g.title
      .split('\n')
      .forEach((line, li) =>
        parts.push(
          `<text x="${cx}" y="${TOP + PLOT_H + 18 + li * LINE}" text-anchor="middle">${esc(line)}</text>`,
        ),
      );
    g.bars.forEach((b, bi) => {
      const ly = legendTop + bi * LINE;
      parts.push(
        `<rect class="legend" x="${x0}" y="${ly - 10}" width="${SWATCH}" height="${SWATCH}" fill="${colour.get(b.label)}"/>`,
      );
      parts.push(`<text class="legend" x="${x0 + SWATCH + 4}" y="${ly}">${esc(b.label)}</text>`);
    });
    parts.push('</g>');
    x0 += widths[gi]!;
  });
  parts.push('</svg>');
  return parts.join('\n');
}
