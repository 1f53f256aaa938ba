//! Logical weight names. We name tensors as GGUF does (token_embd, blk.N.attn_q, ...) and map
//! each to its Hugging Face name; experts are addressed one by one, although GGUF stacks them.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Name {
    TokenEmbd,
    OutputNorm,
    Output,
    AttnNorm(usize),
    AttnQ(usize),
    AttnK(usize),
    AttnV(usize),
    AttnOutput(usize),
    FfnNorm(usize),
    FfnGate(usize),
    FfnUp(usize),
    FfnDown(usize),
    /// The MoE router.
    FfnGateInp(usize),
    /// (layer, expert): expert's gate (HF w1).
    FfnGateExps(usize, usize),
    /// (layer, expert): expert's up (HF w3).
    FfnUpExps(usize, usize),
    /// (layer, expert): expert's down (HF w2).
    FfnDownExps(usize, usize),
}

impl Name {
    /// The GGUF tensor holding this weight; for an expert, the stacked tensor of all experts.
    pub fn gguf(self) -> String {
        use Name::*;
        let blk = |l: usize, s: &str| format!("blk.{l}.{s}.weight");
        match self {
            TokenEmbd => "token_embd.weight".into(),
            OutputNorm => "output_norm.weight".into(),
            Output => "output.weight".into(),
            AttnNorm(l) => blk(l, "attn_norm"),
            AttnQ(l) => blk(l, "attn_q"),
            AttnK(l) => blk(l, "attn_k"),
            AttnV(l) => blk(l, "attn_v"),
            AttnOutput(l) => blk(l, "attn_output"),
            FfnNorm(l) => blk(l, "ffn_norm"),
            FfnGate(l) => blk(l, "ffn_gate"),
            FfnUp(l) => blk(l, "ffn_up"),
            FfnDown(l) => blk(l, "ffn_down"),
            FfnGateInp(l) => blk(l, "ffn_gate_inp"),
            FfnGateExps(l, _) => blk(l, "ffn_gate_exps"),
            FfnUpExps(l, _) => blk(l, "ffn_up_exps"),
            FfnDownExps(l, _) => blk(l, "ffn_down_exps"),
        }
    }

    /// The Hugging Face (LlamaForCausalLM / MixtralForCausalLM) tensor name.
    pub fn hf(self) -> String {
        use Name::*;
        let layer = |l: usize, s: &str| format!("model.layers.{l}.{s}.weight");
        let expert = |l: usize, e: usize, w: &str| {
            format!("model.layers.{l}.block_sparse_moe.experts.{e}.{w}.weight")
        };
        match self {
            TokenEmbd => "model.embed_tokens.weight".into(),
            OutputNorm => "model.norm.weight".into(),
            Output => "lm_head.weight".into(),
            AttnNorm(l) => layer(l, "input_layernorm"),
            AttnQ(l) => layer(l, "self_attn.q_proj"),
            AttnK(l) => layer(l, "self_attn.k_proj"),
            AttnV(l) => layer(l, "self_attn.v_proj"),
            AttnOutput(l) => layer(l, "self_attn.o_proj"),
            FfnNorm(l) => layer(l, "post_attention_layernorm"),
            FfnGate(l) => layer(l, "mlp.gate_proj"),
            FfnUp(l) => layer(l, "mlp.up_proj"),
            FfnDown(l) => layer(l, "mlp.down_proj"),
            FfnGateInp(l) => layer(l, "block_sparse_moe.gate"),
            FfnGateExps(l, e) => expert(l, e, "w1"),
            FfnUpExps(l, e) => expert(l, e, "w3"),
            FfnDownExps(l, e) => expert(l, e, "w2"),
        }
    }

    /// The expert index, for the per-expert names.
    pub fn expert(self) -> Option<usize> {
        match self {
            Name::FfnGateExps(_, e) | Name::FfnUpExps(_, e) | Name::FfnDownExps(_, e) => Some(e),
            _ => None,
        }
    }
}

/// The GGUF row that holds Hugging Face row `hf_row` of a Q or K matrix of `n_rows` rows in
/// `n_head` heads: the inverse of `convert::permuted_source_row`. Within a head of d rows, HF
/// row `j*d/2 + i` (half j, pair i) is stored at row `2i + j`.
pub fn gguf_row_of_hf_row(hf_row: usize, n_rows: usize, n_head: usize) -> usize {
    let d = n_rows / n_head;
    let (head, o) = (hf_row / d, hf_row % d);
    let (j, i) = (o / (d / 2), o % (d / 2));
    head * d + 2 * i + j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::permuted_source_row;

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        for (rows, heads) in [(64, 4), (128, 4), (64, 2), (96, 3)] {
            for r in 0..rows {
                let s = gguf_row_of_hf_row(r, rows, heads);
                assert_eq!(
                    permuted_source_row(s, rows, heads),
                    r,
                    "{rows}/{heads} row {r}"
                );
            }
        }
    }

    #[test]
    fn names_match_the_converter() {
        assert_eq!(Name::AttnQ(3).gguf(), "blk.3.attn_q.weight");
        assert_eq!(
            Name::AttnQ(3).hf(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            Name::FfnDownExps(1, 5).hf(),
            "model.layers.1.block_sparse_moe.experts.5.w2.weight"
        );
        assert_eq!(Name::FfnDownExps(1, 5).gguf(), "blk.1.ffn_down_exps.weight");
    }
}
