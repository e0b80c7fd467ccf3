//! Internode RPC for openraft. A single node is a one-member cluster and never calls its peers,
//! so this factory answers every RPC with `Unreachable`; the cluster issue replaces it with
//! HTTP/JSON RPC on the raft port (DESIGN.md §7). Keeping the seam now means the single node and
//! the cluster run the same Raft code path.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, BasicNode};

use super::{NodeId, TypeConfig};

#[derive(Clone, Default)]
pub struct Network;

pub struct Peer {
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Peer {
        Peer { target }
    }
}

impl Peer {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let why = AnyError::error(format!(
            "node {} is not reachable: this build runs one-member clusters",
            self.target
        ));
        RPCError::Unreachable(Unreachable::new(&NetworkError::new(&why)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        _req: AppendEntriesRequest<TypeConfig>,
        _opt: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _req: InstallSnapshotRequest<TypeConfig>,
        _opt: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _req: VoteRequest<NodeId>,
        _opt: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
