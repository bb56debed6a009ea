//! Lineage graphs as people read them: indented text, Graphviz DOT and
//! Mermaid (rendering is the CLI's; the control plane hands out the graph).

use std::collections::BTreeSet;

use citadel_control::LineageGraph;
use citadel_store::LineageEdge;

fn short(id: &str) -> String {
    match id.split_once(':') {
        Some((k, v)) => format!("{k}:{}", &v[..12.min(v.len())]),
        None => id.to_string(),
    }
}

/// The renderings of a lineage graph.
pub(crate) trait Render {
    fn display(&self, id: &str) -> String;
    fn to_text(&self) -> String;
    fn to_dot(&self) -> String;
    fn to_mermaid(&self) -> String;
}

impl Render for LineageGraph {
    fn display(&self, id: &str) -> String {
        let label = self.nodes.iter().find(|n| n.id == id).map(|n| n.label.as_str()).unwrap_or("");
        if label.is_empty() { short(id) } else { format!("{} ({label})", short(id)) }
    }

    /// Indented text: ancestors above the root, descendants below.
    fn to_text(&self) -> String {
        let mut out = String::new();
        let parents = |n: &str| self.edges.iter().filter(|e| e.child == n).collect::<Vec<_>>();
        let children = |n: &str| self.edges.iter().filter(|e| e.parent == n).collect::<Vec<_>>();
        fn walk<'a>(
            g: &LineageGraph,
            node: &str,
            depth: usize,
            next: &dyn Fn(&str) -> Vec<&'a LineageEdge>,
            up: bool,
            out: &mut String,
            seen: &mut BTreeSet<String>,
        ) where
            LineageGraph: 'a,
        {
            for e in next(node) {
                let other = if up { &e.parent } else { &e.child };
                let arrow = if up { "↑" } else { "↓" };
                out.push_str(&format!("{}{arrow} {} [{}]\n", "  ".repeat(depth), g.display(other), e.relation));
                if seen.insert(other.clone()) {
                    walk(g, other, depth + 1, next, up, out, seen);
                }
            }
        }
        out.push_str(&format!("{}\n", self.display(&self.root)));
        walk(self, &self.root, 1, &parents, true, &mut out, &mut BTreeSet::new());
        walk(self, &self.root, 1, &children, false, &mut out, &mut BTreeSet::new());
        out
    }

    fn to_dot(&self) -> String {
        let mut out = String::from("digraph lineage {\n  rankdir=LR;\n");
        for n in &self.nodes {
            out += &format!(
                "  \"{}\" [label=\"{}\"{}];\n",
                n.id,
                self.display(&n.id).replace('"', "'"),
                if n.id == self.root { ", style=bold" } else { "" }
            );
        }
        for e in &self.edges {
            out += &format!("  \"{}\" -> \"{}\" [label=\"{}\"];\n", e.parent, e.child, e.relation);
        }
        out + "}\n"
    }

    fn to_mermaid(&self) -> String {
        let idx = |id: &str| self.nodes.iter().position(|n| n.id == id).unwrap_or(0);
        let mut out = String::from("graph LR\n");
        for (i, n) in self.nodes.iter().enumerate() {
            out += &format!("  n{i}[\"{}\"]\n", self.display(&n.id).replace('"', "'"));
        }
        for e in &self.edges {
            out += &format!("  n{} -->|{}| n{}\n", idx(&e.parent), e.relation, idx(&e.child));
        }
        out
    }
}
