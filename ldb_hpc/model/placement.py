"""C-alpha positions from the beads of another coarse-grained mapping (residue centre of mass, Martini 3).

The LDB model is conditioned on a C-alpha trace; a mapping whose beads are elsewhere first places the CAs. A
:class:`BeadPlacer` does it in ``rounds`` passes of message passing: each pass featurizes the current trace (the
first bead of every residue to start: the COM, or Martini's BB), sees every bead of the residue in that trace's
local frame, and moves each CA by an offset it predicts in the same frame. Everything is rotation and
translation invariant, per frame, deterministic.

:class:`PlacedBackmapper` puts a placer in front of a C-alpha backmapper: beads → CAs → atoms. Its weights live in
a directory (``placer.json`` + ``placer.safetensors``) beside the name of the CA model it feeds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ldb_hpc.chem.cg_mappings import mapping
from ldb_hpc.chem.residues import RESTYPE_INDEX
from ldb_hpc.errors import InputError
from ldb_hpc.model.features import EDGE_DIM, NODE_DIM, featurize
from ldb_hpc.model.networks import mlp, mp_layers

FORMAT = "ldb-hpc-placer"


@dataclass
class PlacerConfig:
    cg: str = "com"  # the coarse-grained mapping (ldb_hpc.chem.cg_mappings)
    dim: int = 96
    edge_dim: int = 32
    layers: int = 5
    knn: int = 16
    rounds: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


def bead_features(trace: torch.Tensor, R: torch.Tensor, beads: torch.Tensor, bead_mask: torch.Tensor):
    """Every bead of each residue in the local frame of its trace point: trace [B, L, 3] Å, R [B, L, 3, 3],
    beads [B, L, NB, 3] Å, bead_mask [L, NB] bool → [B, L, NB·4] (xyz / 10 Å and the mask)."""
    rel = beads - trace.unsqueeze(-2)
    local = torch.einsum("blji,blkj->blki", R, rel) / 10.0
    m = bead_mask.to(trace.dtype).expand(*local.shape[:-1])
    return torch.cat([local * m.unsqueeze(-1), m.unsqueeze(-1)], dim=-1).flatten(-2)


class _Round(nn.Module):
    def __init__(self, cfg: PlacerConfig, n_beads: int):
        super().__init__()
        self.knn = cfg.knn
        self.node_in = mlp(NODE_DIM + 4 * n_beads, cfg.dim, cfg.dim)
        self.edge_in = mlp(EDGE_DIM, cfg.edge_dim, cfg.edge_dim)
        self.layers = mp_layers(cfg.dim, cfg.edge_dim, cfg.layers)
        self.head = nn.Linear(cfg.dim, 3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, trace, beads, bead_mask, restype, segment):
        g = featurize(trace, restype, segment, self.knn)
        h = self.node_in(torch.cat([g.node, bead_features(trace, g.R, beads, bead_mask)], dim=-1))
        e = self.edge_in(g.edge)
        for layer in self.layers:
            h = layer(h, e, g.nbr)
        return trace + torch.einsum("blij,blj->bli", g.R, self.head(h) * 4.0)  # offsets of a few Å


class BeadPlacer(nn.Module):
    """beads [B, L, NB, 3] Å (the mapping's bead order; zeros where absent), bead_mask [L, NB], restype [L],
    segment [L] → CA [B, L, 3] Å."""

    def __init__(self, cfg: PlacerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or PlacerConfig()
        self.n_beads = mapping(cfg.cg).max_beads
        self.rounds = nn.ModuleList([_Round(cfg, self.n_beads) for _ in range(cfg.rounds)])

    def forward(self, beads, bead_mask, restype, segment, all_rounds: bool = False):
        trace = beads[..., 0, :]
        out = []
        for r in self.rounds:
            trace = r(trace, beads, bead_mask, restype, segment)
            out.append(trace)
        return out if all_rounds else trace


TRANS_CA_CA, CIS_CA_CA = 3.80, 2.95  # Å


def regularize_trace(ca: torch.Tensor, segment: torch.Tensor, restype: torch.Tensor | None = None,
                     iterations: int = 30) -> torch.Tensor:
    """Consecutive CAs of a segment moved to the C-alpha spacing (3.80 Å trans; 2.95 Å cis, for a link into a
    proline placed nearer than 3.35 Å: cis peptides are nearly all X–Pro, and a trans link placed short must not
    become one), each link's error shared by its two ends, ``iterations`` Jacobi passes: a placed trace whose links
    are a few hundredths of an Å off would stretch the peptide bonds the builder places on them.
    ca [B, L, 3] Å, segment [L], restype [L] (None: any short link may be cis) → [B, L, 3] Å."""
    if ca.shape[-2] < 2:
        return ca
    link = (segment[1:] == segment[:-1]).to(ca.dtype).unsqueeze(-1)  # [L-1, 1]
    d0 = None
    for _ in range(iterations):
        v = ca[:, 1:] - ca[:, :-1]
        d = v.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        if d0 is None:
            cis = d < 3.35
            if restype is not None:
                cis = cis & (restype[1:] == RESTYPE_INDEX["PRO"]).unsqueeze(-1)
            d0 = torch.where(cis, torch.full_like(d, CIS_CA_CA), torch.full_like(d, TRANS_CA_CA))
        step = 0.5 * (d - d0) / d * v * link
        ca = ca.clone()
        ca[:, :-1] += 0.5 * step
        ca[:, 1:] -= 0.5 * step
    return ca


def save_placer(placer: BeadPlacer, path, ca_model: str, metadata: dict | None = None) -> str:
    """Write ``placer`` to directory ``path`` (it feeds the CA model named ``ca_model``); returns its hash."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in placer.state_dict().items()}
    save_file(state, str(path / "placer.safetensors"))
    config = {"format": FORMAT, "architecture": placer.cfg.to_dict(), "ca_model": ca_model,
              "metadata": metadata or {}}
    config["hash"] = _hash(config, (path / "placer.safetensors").read_bytes())
    (path / "placer.json").write_text(json.dumps(config, indent=2) + "\n")
    return config["hash"]


def _hash(config: dict, weight_bytes: bytes) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: config[k] for k in ("architecture", "ca_model")}, sort_keys=True).encode())
    h.update(weight_bytes)
    return "sha256:" + h.hexdigest()[:16]


def is_placer_dir(path) -> bool:
    return (Path(path) / "placer.json").is_file()


def default_placer_path(cg: str) -> Path | None:
    """The placer shipped for mapping ``cg`` (ldb_hpc/weights/ldb-CG), or None when the package has none."""
    path = Path(__file__).resolve().parents[1] / "weights" / f"ldb-{cg}"
    return path if is_placer_dir(path) else None


def load_placer(path) -> tuple[BeadPlacer, dict]:
    """(the placer in eval mode, its config dict); InputError for a missing, corrupt or edited one."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        config = json.loads((path / "placer.json").read_text())
        weights = (path / "placer.safetensors").read_bytes()
    except (OSError, ValueError) as exc:
        raise InputError(f"not a readable ldb-hpc placer: {path} ({exc})") from None
    if config.get("format") != FORMAT or _hash(config, weights) != config.get("hash"):
        raise InputError(f"model {path}: placer weights do not match the hash in placer.json (corrupt or edited)")
    placer = BeadPlacer(PlacerConfig(**config["architecture"]))
    placer.load_state_dict(load_file(str(path / "placer.safetensors")))
    placer.eval()
    return placer, config


class PlacedBackmapper:
    """A coarse-grained mapping's backmapper: its placer puts the CAs, the CA backmapper builds the atoms.

    ``backmap(beads, residues, frame_index, samples, seed)``: beads [B, L, NB, 3] Å of the mapping (bead_mask from
    the residue types) → [B, S, L, 14, 3] Å, as every backmapper (ldb_hpc.model.backmappers)."""

    deterministic = False

    def __init__(self, path, ca_backmapper):
        self.placer, config = load_placer(path)
        self.cg = self.placer.cfg.cg
        self.n_beads = self.placer.n_beads
        self._topology = (None, None)  # (residues key, ldb_hpc.geometry.metrics.Topology) of the last protein
        self.inner = ca_backmapper
        self.name = Path(path).name
        self.hash = "sha256:" + hashlib.sha256((config["hash"] + ca_backmapper.hash).encode()).hexdigest()[:16]
        self.steps = ca_backmapper.steps
        self.sampling = dict(getattr(ca_backmapper, "sampling", {}), cg=self.cg)
        self.device = torch.device("cpu")

    def to(self, device) -> PlacedBackmapper:
        self.device = torch.device(device)
        self.placer.to(self.device)
        self.inner.to(self.device)
        return self

    def place(self, beads: torch.Tensor, residues) -> torch.Tensor:
        """CA [B, L, 3] Å of beads [B, L, NB, 3] Å (or [B, L, 3]: one bead per residue)."""
        if beads.dim() == 3:
            beads = beads.unsqueeze(-2)
        dev = beads.device
        mask = torch.as_tensor(mapping(self.cg).bead_mask(residues.restype), device=dev)
        segment = torch.as_tensor(residues.segment, device=dev)
        restype = torch.as_tensor(residues.restype, device=dev)
        with torch.no_grad():
            ca = self.placer(beads.float(), mask, restype, segment)
        return regularize_trace(ca, segment, restype)

    def backmap(self, beads, residues, frame_index, samples: int = 1, seed: int = 0, temperature=None):
        if beads.dim() == 3:
            beads = beads.unsqueeze(-2)
        # The C-alpha model without its clash repair: the fit moves the side chains and repairs after.
        pos = self.inner.backmap(self.place(beads, residues), residues, frame_index, samples, seed, temperature,
                                 pack=False)
        # The side chains are fitted to the beads (ldb_hpc.model.bead_fit): Martini's side-chain beads, or the
        # residue's centre of mass, which pins where its side chain's mass is (pfam40: 1.20 → 0.80 Å, χ1 74 → 77 %).
        from ldb_hpc.model.bead_fit import fit_side_chains

        dev = beads.device
        mask = torch.as_tensor(mapping(self.cg).bead_mask(residues.restype), device=dev)
        restype = torch.as_tensor(residues.restype, device=dev)
        segment = torch.as_tensor(residues.segment, device=dev)
        pos = fit_side_chains(pos, beads.float(), mask, restype, segment, self.cg)
        if samples > 1:
            pos = self._replace_close_members(pos, beads, residues, frame_index, mask, restype, segment)
        return pos

    def _replace_close_members(self, pos, beads, residues, frame_index, mask, restype, segment):
        """An ensemble member that keeps a heavy-atom pair < 1.2 Å after the fit and the repair (rare: a sampled
        backbone the repair cannot mend, e.g. a cis peptide at a chain start on a placed trace) is replaced by
        the frame's most likely structure (temperature 0), fitted the same way, where that one has no such pair:
        every row the engine writes stays clash-free without dropping or re-drawing any."""
        import numpy as np

        from ldb_hpc.chem.residues import NUM_SLOTS, SLOT_MASK
        from ldb_hpc.geometry import metrics
        from ldb_hpc.model.bead_fit import fit_side_chains

        B, S = pos.shape[:2]
        key = (residues.restype.tobytes(), residues.segment.tobytes())
        if self._topology[0] != key:  # built once per protein, not per batch
            self._topology = (key, metrics.build_topology(residues.restype, residues.segment,
                                                          SLOT_MASK[residues.restype]))
        topo = self._topology[1]
        x = pos.detach().to("cpu", torch.float32).numpy().reshape(B * S, -1, NUM_SLOTS, 3)
        rows = np.unique(metrics.clashing_pairs(x, topo, 1.2)[0])
        frames = sorted({int(r) // S for r in rows})
        for f in frames:
            with torch.no_grad():
                one = self.inner.backmap(self.place(beads[f:f + 1], residues), residues, frame_index[f:f + 1], 1, 0,
                                         0.0, pack=False)
            one = fit_side_chains(one, beads[f:f + 1].float(), mask, restype, segment, self.cg)
            if metrics.clashing_pairs(one.detach().to("cpu", torch.float32).numpy()[0], topo, 1.2)[0].size:
                continue  # the most likely structure keeps it too: the rows stay, counted by the engine
            for r in (int(r) for r in rows if int(r) // S == f):
                pos[f, r % S] = one[0, 0]
        return pos


__all__ = ["BeadPlacer", "PlacerConfig", "PlacedBackmapper", "bead_features", "default_placer_path", "load_placer",
           "save_placer"]
