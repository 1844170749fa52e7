//! Test support shared by the simplify and regularize tests: a plain pixel-corner polygonizer
//! that keeps a vertex at every pixel corner (unlike the crate's, which keeps corners only), so
//! those tests also see inputs whose shared borders have identical vertex sequences.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{HashMap, VecDeque};

use geo_types::{LineString, Polygon};

/// Polygons of the 4-connected regions of a `w x h` label grid (row-major), in pixel space
/// (`x` = column, `y` = row), with a vertex at every pixel corner of every boundary, so that
/// shared borders have the same vertices. At a pinch corner (two diagonal pixels of one
/// region) a ring that touches itself is split into two rings touching at a point.
pub fn polygonize(labels: &[u32], w: usize, h: usize) -> Vec<(u32, Polygon<f64>)> {
    let mut comp = vec![usize::MAX; w * h];
    let mut ncomp = 0;
    for start in 0..w * h {
        if comp[start] != usize::MAX {
            continue;
        }
        comp[start] = ncomp;
        let mut queue = VecDeque::from([start]);
        while let Some(i) = queue.pop_front() {
            let (r, c) = (i / w, i % w);
            let mut nb = Vec::new();
            if r > 0 {
                nb.push(i - w);
            }
            if r + 1 < h {
                nb.push(i + w);
            }
            if c > 0 {
                nb.push(i - 1);
            }
            if c + 1 < w {
                nb.push(i + 1);
            }
            for j in nb {
                if comp[j] == usize::MAX && labels[j] == labels[start] {
                    comp[j] = ncomp;
                    queue.push_back(j);
                }
            }
        }
        ncomp += 1;
    }
    let at = |r: isize, c: isize| -> usize {
        if r < 0 || c < 0 || r >= h as isize || c >= w as isize {
            usize::MAX - 1
        } else {
            comp[r as usize * w + c as usize]
        }
    };
    // Directed boundary edges per component: clockwise on screen around each pixel, so the
    // region is on the right-hand side (screen) and exteriors have positive shoelace area.
    type Outgoing = HashMap<(i64, i64), Vec<(i64, i64)>>;
    let mut out_edges: Vec<Outgoing> = vec![HashMap::new(); ncomp];
    for r in 0..h as isize {
        for c in 0..w as isize {
            let k = at(r, c);
            let (x, y) = (c as i64, r as i64);
            let mut add = |a: (i64, i64), b: (i64, i64)| out_edges[k].entry(a).or_default().push(b);
            if at(r - 1, c) != k {
                add((x, y), (x + 1, y));
            }
            if at(r, c + 1) != k {
                add((x + 1, y), (x + 1, y + 1));
            }
            if at(r + 1, c) != k {
                add((x + 1, y + 1), (x, y + 1));
            }
            if at(r, c - 1) != k {
                add((x, y + 1), (x, y));
            }
        }
    }
    let mut polys = Vec::new();
    for (k, mut edges) in out_edges.into_iter().enumerate() {
        let mut rings: Vec<Vec<(i64, i64)>> = Vec::new();
        while let Some((&start, _)) = edges.iter().find(|(_, v)| !v.is_empty()) {
            let mut ring = vec![start];
            let mut prev = start;
            let mut cur = edges.get_mut(&start).unwrap().pop().unwrap();
            while cur != start {
                ring.push(cur);
                let outs = edges.get_mut(&cur).unwrap();
                let idx = if outs.len() == 1 {
                    0
                } else {
                    // Turn right on screen (towards the region); a ring that then touches
                    // itself is split below.
                    let (dx, dy) = (cur.0 - prev.0, cur.1 - prev.1);
                    let want = (cur.0 - dy, cur.1 + dx);
                    outs.iter().position(|&o| o == want).unwrap_or(0)
                };
                let next = outs.remove(idx);
                prev = cur;
                cur = next;
            }
            // Split the ring where it touches itself: the loops are a ring and its holes.
            let mut stack: Vec<(i64, i64)> = Vec::new();
            let mut seen: HashMap<(i64, i64), usize> = HashMap::new();
            for v in ring {
                if let Some(&i) = seen.get(&v) {
                    let lp: Vec<(i64, i64)> = stack.drain(i..).collect();
                    for u in &lp {
                        seen.remove(u);
                    }
                    rings.push(lp);
                }
                seen.insert(v, stack.len());
                stack.push(v);
            }
            rings.push(stack);
        }
        let to_ls = |r: &Vec<(i64, i64)>| {
            LineString::from(
                r.iter()
                    .map(|&(x, y)| (x as f64, y as f64))
                    .collect::<Vec<_>>(),
            )
        };
        let area = |r: &Vec<(i64, i64)>| {
            let n = r.len();
            (0..n)
                .map(|i| r[i].0 * r[(i + 1) % n].1 - r[(i + 1) % n].0 * r[i].1)
                .sum::<i64>()
        };
        let ext = rings.iter().position(|r| area(r) > 0).unwrap();
        let holes = rings
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != ext)
            .map(|(_, r)| to_ls(r));
        let label = labels[comp.iter().position(|&c| c == k).unwrap()];
        polys.push((label, Polygon::new(to_ls(&rings[ext]), holes.collect())));
    }
    polys
}
