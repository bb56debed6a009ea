//! Lineage: the graph around a dataset version, a model version or an artifact (the CLI renders it).

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct LineageNode {
    pub id: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LineageGraph {
    pub root: String,
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
}

impl Workspace {
    /// The lineage graph around a node: all ancestors and descendants. The
    /// reference is a dataset or model version (`dataset:adult@2`,
    /// `model:credit@1`) or an artifact (id prefix or name).
    pub async fn lineage(&self, caller: &Caller, reference: &str) -> Result<LineageGraph> {
        let root = match reference.split_once(':') {
            Some((kind @ ("dataset" | "model"), rest)) => {
                let (name, version) = parse_dataset_ref(rest)?;
                let version = version.ok_or_else(|| {
                    ControlError::Invalid(format!("{reference:?}: name a version, e.g. {kind}:{name}@1"))
                })?;
                let kind = if kind == "dataset" { ResourceKind::Dataset } else { ResourceKind::Model };
                Resource::new(kind, format_args!("{name}@{version}"))
            }
            _ => {
                // Whether an artifact exists is itself for those who may read
                // lineage: anyone else is refused (and recorded) before the lookup.
                if !caller.grants().iter().any(|g| g.role.allows(Action::LineageRead)) {
                    self.authorize(caller, Action::LineageRead, Resource::artifact(reference))
                        .await?
                        .unrecorded("not reached: the caller holds no lineage.read");
                }
                Resource::artifact(self.store()?.resolve(reference).await?.id)
            }
        };
        let permit = self.authorize(caller, Action::LineageRead, root.clone()).await?;
        let root = root.to_string();
        let mut edges = BTreeSet::new();
        for upstream in [true, false] {
            let mut queue = VecDeque::from([root.clone()]);
            let mut seen = BTreeSet::from([root.clone()]);
            while let Some(node) = queue.pop_front() {
                for e in citadel_store::lineage_edges(self.db.pool(), &node, upstream).await? {
                    let next = if upstream { e.parent.clone() } else { e.child.clone() };
                    edges.insert((e.child, e.parent, e.relation));
                    if seen.insert(next.clone()) && seen.len() < 10_000 {
                        queue.push_back(next);
                    }
                }
            }
        }
        let mut labels = BTreeMap::new();
        for a in self.store()?.list().await? {
            labels.insert(format!("artifact:{}", a.id), a.names.last().cloned().unwrap_or_default());
        }
        let mut nodes: BTreeSet<String> = edges.iter().flat_map(|(c, p, _)| [c.clone(), p.clone()]).collect();
        nodes.insert(root.clone());
        self.record(permit, serde_json::json!({"nodes": nodes.len()})).await?;
        Ok(LineageGraph {
            root,
            nodes: nodes
                .into_iter()
                .map(|n| LineageNode { label: labels.get(&n).cloned().unwrap_or_default(), id: n })
                .collect(),
            edges: edges.into_iter().map(|(child, parent, relation)| LineageEdge { child, parent, relation }).collect(),
        })
    }
}
