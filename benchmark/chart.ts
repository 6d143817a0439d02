// An SVG bar chart of the README table: one group per (case, mode), one bar per column, bar
// height = % of theoretic, the iter/s written on each bar.
export interface ChartGroup {
  title: string;
  bars: { label: string; iterPerSec: number; percent: number }[];
}

const COLORS = ['#9e9e9e', '#5c6bc0', '#26a69a', '#ef6c00', '#8e24aa'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
}

export function barChart(title: string, groups: ChartGroup[]): string {
  const barW = 34, gap = 10, groupGap = 40, top = 60, plotH = 260, left = 50;
  const n = groups[0]?.bars.length ?? 0;
  const groupW = n * (barW + gap) + groupGap;
  const width = left + groups.length * groupW + 20;
  const height = top + plotH + 90;
  const y = (pct: number) => top + plotH - (Math.min(pct, 110) / 110) * plotH;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="24" font-size="15" font-weight="bold">${esc(title)}</text>`,
  ];
  for (const pct of [0, 25, 50, 75, 100]) {
    parts.push(`<line x1="${left}" x2="${width - 10}" y1="${y(pct)}" y2="${y(pct)}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${left - 6}" y="${y(pct) + 4}" text-anchor="end">${pct}%</text>`);
  }
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupW + groupGap / 2;
    g.bars.forEach((b, bi) => {
      const x = x0 + bi * (barW + gap);
      parts.push(`<rect x="${x}" y="${y(b.percent)}" width="${barW}" height="${top + plotH - y(b.percent)}" fill="${COLORS[bi % COLORS.length]}"/>`);
      parts.push(`<text x="${x + barW / 2}" y="${y(b.percent) - 4}" text-anchor="middle">${b.iterPerSec.toFixed(1)}</text>`);
    });
    parts.push(`<text x="${x0 + (n * (barW + gap)) / 2}" y="${top + plotH + 18}" text-anchor="middle">${esc(g.title)}</text>`);
  });
  groups[0]?.bars.forEach((b, bi) => {
    const x = left + bi * 130;
    parts.push(`<rect x="${x}" y="${height - 30}" width="12" height="12" fill="${COLORS[bi % COLORS.length]}"/>`);
    parts.push(`<text x="${x + 16}" y="${height - 20}">${esc(b.label)}</text>`);
  });
  parts.push(`<text x="${left}" y="44" fill="#555">bar height: % of theoretic flash_attn; label: iter/s per rank</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}
