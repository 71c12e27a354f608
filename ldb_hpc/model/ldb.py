"""Latent Diffusion Backmapping: the assembled model, its losses, sampling, and the backmapper the runtime uses.

Pipeline for B frames of one protein (L residues), S samples each:
  featurize(CA) → ConditionEncoder (once per frame) → h
  diffusion: DDIM over per-residue latents z [B, S, L, d] with the light Denoiser (counter-based noise)
  → snap to the nearest codebook entry → Decoder(h, zq) → angles (α per peptide link, χ, chain-end ψ/φ)
  → ldb_hpc.geometry.peptide.backbone_from_angles + ops.atoms_from_backbone (ideal geometry) → atom14 [B, S, L, 14, 3].
Training stage 1 (tokenizer): true angles → LatentEncoder → VQ → Decoder; stage 2 (diffusion): the frozen
tokenizer's pre-quantisation latents, normalised per channel, are the diffusion targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ldb_hpc import ops
from ldb_hpc.chem import residues as rc
from ldb_hpc.geometry.peptide import LinkGeometry, backbone_from_angles, link_geometry, singleton_backbone
from ldb_hpc.geometry.vectors import dihedral
from ldb_hpc.model import diffusion as diff
from ldb_hpc.model.features import featurize
from ldb_hpc.model.ideal import load_tables, peptide_template
from ldb_hpc.model.networks import ConditionEncoder, Decoder, Denoiser, LatentContext, LatentEncoder, VectorQuantizer
from ldb_hpc.model.rotamers import chi1_well, chi_from_modes, settle_chi1
from ldb_hpc.model.targets import clash_loss, target_features, true_angles

_PI_PERIODIC = torch.as_tensor(rc.CHI_PI_PERIODIC_MASK)  # [21, 4]
_PRO_CHI1_MAX = 0.7  # rad (40°)


@dataclass
class LDBConfig:
    dim: int = 64
    edge_dim: int = 32
    layers: int = 3
    knn: int = 16
    latent_dim: int = 4
    n_codes: int = 4096
    hidden: int = 128
    denoiser_hidden: int = 128
    steps: int = 8  # default sampling steps
    temperature: float = 1.0  # sampling temperature for ensembles (samples > 1)
    eta: float = 0.0
    null_latent_p: float = 0.15  # training: share of residues decoded from a learned 'no latent' vector
    sample_decoder: bool = False  # stage 3: a second conditioning encoder + decoder, fine-tuned on sampled latents
    sample_extra_layers: int = 0  # stage 3: gated message-passing layers of the sampling encoder beyond `layers`
    context_extra_layers: int = 0  # stage 3: gated message-passing layers over the sampled codes beyond 2
    chi_modes: bool = False  # stage 3: a head that classifies each residue's χ1 well (g+, t, g−)
    chi_mode_p: float = 1.0  # build χ1 in the head's well where it is at least this sure and χ1 is in another

    def to_dict(self) -> dict:
        return asdict(self)


def _angle(v: torch.Tensor) -> torch.Tensor:
    """Unit-2-vector (cos, sin) [..., 2] → angle [...] rad."""
    return torch.atan2(v[..., 1], v[..., 0])


class LDBModel(nn.Module):
    def __init__(self, cfg: LDBConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or LDBConfig()
        self.cond_encoder = ConditionEncoder(cfg.dim, cfg.edge_dim, cfg.layers)
        self.latent_encoder = LatentEncoder(cfg.dim, cfg.latent_dim, cfg.hidden)
        self.vq = VectorQuantizer(cfg.n_codes, cfg.latent_dim)
        self.decoder = Decoder(cfg.dim, cfg.latent_dim, cfg.hidden)
        # Stage 3 (refine) copies the tokenizer's decoder and fine-tunes the copy on the latents the sampler
        # produces; sampling decodes with it, the tokenizer round trip keeps the stage-1 decoder.
        self.sample_decoder = Decoder(cfg.dim, cfg.latent_dim, cfg.hidden) if cfg.sample_decoder else None
        self.sample_encoder = (ConditionEncoder(cfg.dim, cfg.edge_dim, cfg.layers, cfg.sample_extra_layers)
                               if cfg.sample_decoder else None)
        self.sample_context = (LatentContext(cfg.dim, cfg.edge_dim, cfg.latent_dim, 2, cfg.context_extra_layers)
                               if cfg.sample_decoder else None)
        self.sample_chi_head = nn.Linear(cfg.hidden, 3) if cfg.chi_modes else None
        self.null_latent = nn.Parameter(torch.zeros(cfg.latent_dim))
        self.denoiser = Denoiser(cfg.dim, cfg.latent_dim, cfg.denoiser_hidden)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(cfg.latent_dim))
        self.schedule = diff.linear_schedule()
        self._tables = None

    @property
    def tables(self) -> dict:
        """The peptide template tables (model/ideal), on the model's device: moved with the model by ``.to``, so
        building a batch copies nothing between host and device."""
        if self._tables is None:
            self._tables = {k: v.to(self.latent_mean.device) for k, v in load_tables().items()}
        return self._tables

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if self._tables is not None:  # .to(device) and friends move the tables with the weights
            self._tables = {k: fn(v) for k, v in self._tables.items()}
        return self

    # -- pieces ---------------------------------------------------------------------------------------
    def condition(self, ca: torch.Tensor, restype: torch.Tensor, segment: torch.Tensor):
        g = featurize(ca, restype, segment, self.cfg.knn)
        return g, self.cond_encoder(g)

    def build(self, ca: torch.Tensor, restype: torch.Tensor, segment: torch.Tensor, out: dict,
              lf: LinkGeometry | None = None, pack: bool = False, staggered: bool = False) -> torch.Tensor:
        """Decoder output (unit 2-vectors) → atom14 [B, L, 14, 3] Å; ``pack``: repair side-chain clashes;
        ``staggered``: χ1 into its rotamer well, the distal χ re-fitted (:mod:`ldb_hpc.model.rotamers`; inference
        only: it has no gradient)."""
        tables = self.tables
        if ca.shape[-2] == 1:
            n, c, o = singleton_backbone(ca)
            o_t = dihedral(n, ca, c, o)
        else:
            lf = lf or link_geometry(ca, segment)
            n, c, o, o_t = backbone_from_angles(ca, lf, _angle(out["alpha"]), _angle(out["psi"][:, :-1]),
                                                _angle(out["phi"][:, 1:]), peptide_template(tables),
                                                has_cb=restype != rc.RESTYPE_INDEX["GLY"])
        chi = _angle(out["chi"])
        if "chi1_logits" in out and self.cfg.chi_mode_p < 1.0:
            chi = chi_from_modes(chi, out["chi1_logits"], self.cfg.chi_mode_p)
        # Proline χ1 lies within ±40° (ring puckers ≈ ±30°); a wild prediction would leave the ring closure
        # (a search ±40° around it) no closed ring to find.
        is_pro = (restype == rc.RESTYPE_INDEX["PRO"])[:, None] & (torch.arange(4, device=chi.device) == 0)
        chi = torch.where(is_pro, chi.clamp(-_PRO_CHI1_MAX, _PRO_CHI1_MAX), chi)
        pos = ops.atoms_from_backbone(n, ca, c, o_t, chi, restype)
        if staggered:
            pos, chi = settle_chi1(pos, (ca, n, c, o_t), chi, restype)
        if pack:
            from ldb_hpc.model.packing import repack
            from ldb_hpc.model.rescue import rescue

            pos = repack(pos, ca, n, c, o_t, chi, restype, segment)
            pos = rescue(pos, ca, n, c, o_t, restype, segment)
        return pos

    # -- stage 1 ----------------------------------------------------------------------------------------
    def tokenizer_loss(self, pos: torch.Tensor, mask: torch.Tensor, restype: torch.Tensor, segment: torch.Tensor,
                       clash_weight: float = 1.0) -> dict:
        """pos [B, L, 14, 3] Å, mask [B, L, 14] (CA present everywhere); restype, segment [L]."""
        ca = pos[..., 1, :]
        g, h = self.condition(ca, restype, segment)
        lf = link_geometry(ca, segment)
        t = true_angles(pos, mask, restype, segment, lf)
        z = self.latent_encoder(h, target_features(t))
        zq, idx, vq_loss = self.vq(z, mask[..., 1])
        if self.training and self.cfg.null_latent_p > 0:
            # Latent dropout: the decoder must also work from the CA context alone (robust to poor latents).
            drop = torch.rand(zq.shape[:-1], device=zq.device) < self.cfg.null_latent_p
            zq = torch.where(drop[..., None], self.null_latent.expand_as(zq), zq)
        out = self.decoder(h, zq, g.nbr)
        x = self.build(ca, restype, segment, out, lf)
        return self._losses(x, pos, mask, restype, segment, out, t, g.nbr, vq_loss, clash_weight) | {"z": z, "idx": idx}

    def _losses(self, x, pos, mask, restype, segment, out, t, nbr, vq_loss, clash_weight) -> dict:
        exists = torch.as_tensor(rc.SLOT_MASK, device=restype.device)[restype]
        m = (mask & exists).to(x.dtype)
        dist = ((x - pos) ** 2).sum(-1).clamp_min(1e-8).sqrt()
        l_xyz = (dist * m).sum() / m.sum().clamp_min(1)
        rmsd = ((dist ** 2 * m).sum() / m.sum().clamp_min(1)).sqrt()

        def ang_loss(pred, true, ok, period=None):
            d = _angle(pred) - true
            ls = 1 - torch.cos(d) if period is None else torch.where(period, 1 - torch.cos(2 * d), 1 - torch.cos(d))
            okf = ok.to(ls.dtype)
            return (ls * okf).sum() / okf.sum().clamp_min(1)

        pi = _PI_PERIODIC.to(restype.device)[restype].expand(t["chi"].shape)
        l_tor = (ang_loss(out["alpha"], t["alpha"], t["alpha_ok"]) + ang_loss(out["chi"], t["chi"], t["chi_ok"], pi)
                 + 0.5 * ang_loss(out["psi"][:, :-1], t["psi"], t["psi_ok"])
                 + 0.5 * ang_loss(out["phi"][:, 1:], t["phi"], t["phi_ok"]))
        # Keep the raw 2-vectors near the unit circle so atan2 stays well conditioned.
        norms = torch.cat([out["alpha"].norm(dim=-1).flatten(), out["chi"].norm(dim=-1).flatten()])
        l_norm = ((norms - 1) ** 2).mean()
        l_clash = clash_loss(x, restype, segment, nbr)
        total = l_xyz + 0.5 * l_tor + 0.02 * l_norm + clash_weight * l_clash + vq_loss
        return {"loss": total, "xyz": l_xyz.detach(), "rmsd": rmsd.detach(), "tor": l_tor.detach(),
                "clash": l_clash.detach(), "vq": vq_loss.detach()}

    # -- stage 2 ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_latents(self, pos, mask, restype, segment):
        """Continuous (pre-quantisation) latents z [B, L, d] and the conditioning (graph, h)."""
        ca = pos[..., 1, :]
        g, h = self.condition(ca, restype, segment)
        t = true_angles(pos, mask, restype, segment)
        return self.latent_encoder(h, target_features(t)), g, h

    def diffusion_loss(self, pos, mask, restype, segment) -> dict:
        z, g, h = self.encode_latents(pos, mask, restype, segment)
        x0 = ((z - self.latent_mean) / self.latent_std).unsqueeze(1)  # [B, 1, L, d]
        cond = self.denoiser.prepare(h, g.nbr)
        loss = diff.eps_loss(self.schedule, self.denoiser, x0, cond, mask[:, None, :, 1]).mean()
        return {"loss": loss, "eps": loss.detach()}

    # -- stage 3 ----------------------------------------------------------------------------------------
    def add_chi_modes(self) -> None:
        """Give stage 3 a χ1 mode head (zero-initialised: uniform until trained; off until chi_mode_p < 1)."""
        if self.sample_chi_head is None:
            self.cfg.chi_modes = True
            self.sample_chi_head = nn.Linear(self.cfg.hidden, 3).to(self.latent_mean.device)
            nn.init.zeros_(self.sample_chi_head.weight)
            nn.init.zeros_(self.sample_chi_head.bias)

    def add_sample_decoder(self, extra_layers: int = 0, context_extra_layers: int = 0) -> None:
        """Start (or deepen) stage 3. The sampling decoder and encoder begin as copies of the tokenizer's; then the
        encoder gets ``extra_layers`` and the code context ``context_extra_layers`` gated message-passing layers
        beyond their first 3 and 2 (never fewer than it has). A gated layer starts as the identity, so a deeper
        model starts as exactly the function of the shallower one: a trained stage 3 can be deepened and trained
        on."""
        import copy

        from ldb_hpc.model.networks import GatedMPLayer

        cfg, dev = self.cfg, self.latent_mean.device
        if self.sample_decoder is None:
            cfg.sample_decoder, cfg.sample_extra_layers, cfg.context_extra_layers = True, 0, 0
            self.sample_decoder = copy.deepcopy(self.decoder)
            self.sample_encoder = copy.deepcopy(self.cond_encoder)
            self.sample_context = LatentContext(cfg.dim, cfg.edge_dim, cfg.latent_dim).to(dev)
        for layers, field, n in ((self.sample_encoder.layers, "sample_extra_layers", extra_layers),
                                 (self.sample_context.layers, "context_extra_layers", context_extra_layers)):
            while getattr(cfg, field) < n:
                layers.append(GatedMPLayer(cfg.dim, cfg.edge_dim).to(dev))
                setattr(cfg, field, getattr(cfg, field) + 1)

    def _decode_sampled(self, g, h: torch.Tensor, zq: torch.Tensor, repeat: int = 1) -> dict:
        """Decode sampled codes zq [B·repeat, L, d]: with the stage-3 networks when the model has them (their own
        reading of the CA graph g, run once per frame; message passing over the sampled codes; the sampling
        decoder), else with the tokenizer's decoder on h."""
        rep = lambda v: v.repeat_interleave(repeat, dim=0) if repeat > 1 else v  # noqa: E731
        if self.sample_decoder is None:
            return self.decoder(rep(h), zq, rep(g.nbr))
        h2 = self.sample_context(rep(self.sample_encoder(g)), zq, g, repeat)
        out = self.sample_decoder(h2, zq, rep(g.nbr))
        if self.sample_chi_head is not None:
            out["chi1_logits"] = self.sample_chi_head(out["features"])
        return out

    def refine_loss(self, pos, mask, restype, segment, true_share: float = 0.0, steps: int | None = None,
                    generator: torch.Generator | None = None, mse_weight: float = 1.0, ca_noise: float = 0.0,
                    chi_mode_weight: float = 0.2) -> dict:
        """Decoder fine-tuning on the latents the sampler actually produces (stage 3; only the decoder learns).

        For each batch the frozen conditioning encoder and denoiser sample latents with DDIM (``steps``) at a
        temperature drawn per batch (0 in 70 % of batches: the default single-sample path; otherwise uniform
        in [0, 1]); they are snapped to the codebook like at inference. A random ``true_share`` of residues
        keeps the encoder's own code instead. The sampling encoder + decoder (:meth:`add_sample_decoder`; the
        tokenizer's decoder and its round trip, and the denoiser's conditioning, stay as they are) then learn
        the structure most consistent with what the sampler hands it, with the stage-1 losses (coordinates,
        torsions, clashes) plus ``mse_weight`` × the mean squared atom error: the RMSD-optimal structure under
        the remaining uncertainty is a mean, which the absolute-distance loss alone does not reward.

        ``ca_noise`` > 0: the CA trace the networks see (and the atoms are built on) is the true one plus Gaussian
        noise of a standard deviation drawn per batch from U(0, ca_noise) Å, so that thermal (MD) traces are in
        distribution; targets stay the true atoms and angles."""
        ca_true = pos[..., 1, :]
        with torch.no_grad():
            ca = ca_true
            if ca_noise > 0:
                sigma = ca_noise * float(torch.rand((), generator=generator))
                ca = ca_true + sigma * torch.randn(ca_true.shape, generator=generator).to(ca_true)
            g, h = self.condition(ca, restype, segment)
            lf = link_geometry(ca, segment)
            t = true_angles(pos, mask, restype, segment, None if ca_noise > 0 else lf)
            z_true = self.latent_encoder(h, target_features(t))
            zq_true = self.vq.decode(self.vq.nearest(z_true))
            B, L = ca.shape[:2]
            temp = 0.0 if torch.rand((), generator=generator) < 0.7 else float(torch.rand((), generator=generator))
            seed = int(torch.randint(0, 2 ** 31 - 1, (), generator=generator))
            cond = self.denoiser.prepare(h, g.nbr)
            x = diff.sample(self.schedule, self.denoiser, cond, (B, 1, L, self.cfg.latent_dim),
                            torch.zeros(B, dtype=torch.long, device=ca.device), seed, steps or self.cfg.steps, temp,
                            self.cfg.eta, ca.dtype)[:, 0]
            zq_s = self.vq.decode(self.vq.nearest(x * self.latent_std + self.latent_mean))
            keep = torch.rand(zq_s.shape[:-1], generator=generator).to(zq_s.device) < true_share
            zq = torch.where(keep[..., None], zq_true, zq_s)
        out = self._decode_sampled(g, h, zq)
        x = self.build(ca, restype, segment, out, lf)
        zero = x.new_zeros(())
        losses = self._losses(x, pos, mask, restype, segment, out, t, g.nbr, zero, 1.0)
        exists = torch.as_tensor(rc.SLOT_MASK, device=restype.device)[restype]
        m = (mask & exists).to(x.dtype)
        msd = (((x - pos) ** 2).sum(-1) * m).sum() / m.sum().clamp_min(1)
        losses["loss"] = losses["loss"] + mse_weight * msd
        if "chi1_logits" in out:
            well = chi1_well(t["chi"][..., 0])
            ok = t["chi_ok"][..., 0]
            ce = nn.functional.cross_entropy(out["chi1_logits"][ok], well[ok]) if bool(ok.any()) else zero
            losses["loss"] = losses["loss"] + chi_mode_weight * ce
            losses["chi1_ce"] = ce.detach()
        return losses

    # -- inference --------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, ca: torch.Tensor, restype: torch.Tensor, segment: torch.Tensor, frames: torch.Tensor,
               samples: int = 1, seed: int = 0, steps: int | None = None, temperature: float | None = None,
               pack: bool = True):
        """Backmap frames ca [B, L, 3] Å → atom14 [B, S, L, 14, 3] Å. frames [B] int64 are global indices."""
        cfg = self.cfg
        steps = cfg.steps if steps is None else steps
        if temperature is None:
            temperature = 0.0 if samples == 1 else cfg.temperature
        B, L, _ = ca.shape
        g, h = self.condition(ca, restype, segment)
        cond = self.denoiser.prepare(h, g.nbr)
        x = diff.sample(self.schedule, self.denoiser, cond, (B, samples, L, cfg.latent_dim), frames, seed, steps,
                        temperature, cfg.eta, ca.dtype)
        z = x * self.latent_std + self.latent_mean
        zq = self.vq.decode(self.vq.nearest(z))  # [B, S, L, d]
        rep = lambda v: v.repeat_interleave(samples, dim=0)  # noqa: E731
        out = self._decode_sampled(g, h, zq.reshape(B * samples, L, -1), samples)
        xyz = self.build(rep(ca), restype, segment, out, pack=pack, staggered=True)
        return xyz.reshape(B, samples, L, rc.NUM_SLOTS, 3)

    @torch.no_grad()
    def reconstruct(self, pos, mask, restype, segment) -> torch.Tensor:
        """Tokenizer round trip with the encoder's own codes: atom14 [B, L, 14, 3]."""
        ca = pos[..., 1, :]
        g, h = self.condition(ca, restype, segment)
        t = true_angles(pos, mask, restype, segment)
        z = self.latent_encoder(h, target_features(t))
        out = self.decoder(h, self.vq.decode(self.vq.nearest(z)), g.nbr)
        return self.build(ca, restype, segment, out)
