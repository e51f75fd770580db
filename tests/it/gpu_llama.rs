//! SmolLM2 end to end on the GPU backend through wgpu (lavapipe on a machine without a GPU):
//! greedy tokens on the fixture prompts equal to the CPU backend's up to a near tie (where
//! they part, the CPU's logits of the two tokens are within the logit bound, 0.05), the first
//! one PyTorch's (agreement with PyTorch's printed), and the next-token logits against
//! PyTorch's top 5. On lavapipe a prompt takes about a minute, so by default two prompts run
//! (a plain text and a chat) for 16 tokens each, to keep CI's time; `EDGECUT_GPU_LLAMA_ALL=1`
//! runs all ten for the fixture's 32.
#![cfg(feature = "wgpu")]

use edgecut::{DeviceKind, Llm, LlmOptions};
use edgecut_tests::{f32s, fixture, greedy, ids, smollm_gguf};

fn agreement(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn smollm2_on_wgpu_gives_the_cpus_greedy_tokens() {
    let open = |device| {
        Llm::open(smollm_gguf(), &LlmOptions::default().with_device(device))
            .unwrap_or_else(|e| panic!("{device:?}: {e}"))
    };
    let (gpu, cpu) = (open(DeviceKind::Wgpu), open(DeviceKind::Cpu));
    println!("decoder on {}", gpu.device());
    let fx = fixture("smollm2.json");
    let (mut to_cpu, mut to_torch, mut worst) = (Vec::new(), Vec::new(), 0f32);
    let all = std::env::var("EDGECUT_GPU_LLAMA_ALL").is_ok_and(|v| v == "1");
    let cases = fx["cases"].as_array().unwrap();
    let chosen = cases
        .iter()
        .filter(|c| all || ["english", "chat"].contains(&c["name"].as_str().unwrap()));
    for c in chosen {
        let (name, prompt, mut want) = (
            c["name"].as_str().unwrap(),
            ids(&c["ids"]),
            ids(&c["greedy"]),
        );
        if !all {
            want.truncate(16);
        }
        let logits = gpu.new_context().unwrap().last_logits(&prompt).unwrap();
        for (&id, &l) in ids(&c["top5"]["ids"])
            .iter()
            .zip(&f32s(&c["top5"]["logits"]))
        {
            worst = worst.max((logits[id as usize] - l).abs());
        }
        let (g, cp) = (
            greedy(&gpu, &prompt, want.len()),
            greedy(&cpu, &prompt, want.len()),
        );
        let (a, t) = (agreement(&g, &cp), agreement(&g, &want));
        println!(
            "wgpu {name:<12} greedy agreement with the CPU {a:>2}/{}, with PyTorch {t:>2}/{}",
            cp.len(),
            want.len()
        );
        assert_eq!(
            g.first(),
            cp.first(),
            "{name}: first greedy token against the CPU"
        );
        assert_eq!(
            g.first(),
            want.first(),
            "{name}: first greedy token against PyTorch"
        );
        if a < g.len().min(cp.len()) {
            // Parted: only at a near tie of the CPU's own logits is that allowed.
            let mut at = prompt.clone();
            at.extend_from_slice(&cp[..a]);
            let l = cpu.new_context().unwrap().last_logits(&at).unwrap();
            let gap = (l[cp[a] as usize] - l[g[a] as usize]).abs();
            println!("  parted at token {a}: CPU logits {gap:.4} apart");
            assert!(
                gap <= 0.05,
                "{name}: wgpu parted from the CPU at token {a} where the CPU's logits are \
                 {gap} apart (not a tie)"
            );
        }
        to_cpu.push(a);
        to_torch.push(t);
    }
    println!("wgpu: greedy agreement with the CPU {to_cpu:?}, with PyTorch {to_torch:?}; largest top-5 logit difference to PyTorch {worst:.5}");
    // The CPU backend's own bound against PyTorch (llama_fidelity.rs).
    assert!(worst <= 0.05, "top-5 logits off by {worst}");
}

/// A tiny Qwen3 (q/k norms, NeoX rope, its own head size) on wgpu: transformers' greedy tokens
/// (the fixture, with keys and values at f16 as edgecut stores them), as on the CPU.
#[test]
fn qwen3_on_wgpu_gives_transformers_greedy_tokens() {
    let path = edgecut_tests::tiny_decoder("qwen3", edgecut::WeightType::F32);
    let gpu = Llm::open(&path, &LlmOptions::default().with_device(DeviceKind::Wgpu))
        .unwrap_or_else(|e| panic!("{e}"));
    let m = &fixture("decoders-tiny.json")["models"]["qwen3"];
    let prompt = ids(&m["ids"]);
    assert_eq!(greedy(&gpu, &prompt, 8), ids(&m["f16_kv"]["greedy"]));
}

/// A tiny Gemma 3 on wgpu: transformers' float64 logits (keys and values at f16) within 2.5e-4
/// of the largest, as on the CPU (`gemma3.rs` says why not 1e-4), over a 20-token prompt and a
/// 300-token one, where the sliding layers' rings wrap, and its greedy tokens after both.
#[test]
fn gemma3_on_wgpu_matches_transformers_past_its_window() {
    use crate::decoder_spec::{rel_diff, rows};
    let path = edgecut_tests::tiny_decoder("gemma3", edgecut::WeightType::F32);
    let gpu = Llm::open(&path, &LlmOptions::default().with_device(DeviceKind::Wgpu))
        .unwrap_or_else(|e| panic!("{e}"));
    let fx = fixture("gemma3-tiny.json");
    let (p, l) = (&fx["prompt"], &fx["long"]);
    let logits = gpu.new_context().unwrap().logits(&ids(&p["ids"])).unwrap();
    let d = rel_diff(&logits, &rows(&p["f64_f16_kv"]["prompt_logits"]));
    let last = gpu
        .new_context()
        .unwrap()
        .last_logits(&ids(&l["ids"]))
        .unwrap();
    let dl = rel_diff(&last, &f32s(&l["f64_f16_kv"]["last_logits"]));
    println!("gemma3 tiny on wgpu vs transformers (f64): prompt {d:.2e}, long prompt {dl:.2e}");
    assert!(d <= 2.5e-4 && dl <= 2.5e-4, "prompt {d:e}, long {dl:e}");
    assert_eq!(
        greedy(&gpu, &ids(&p["ids"]), 8),
        ids(&p["f16_kv"]["greedy"])
    );
    assert_eq!(
        greedy(&gpu, &ids(&l["ids"]), 8),
        ids(&l["f16_kv"]["greedy"])
    );
}

/// The hub's Gemma 3 270M Q4_K_M on wgpu (its Q4_K, Q6_K and Q5_0 blocks kept as units of 32):
/// greedy equal to the CPU's on a prompt, 6 tokens (lavapipe takes minutes per prompt of this
/// model; `EDGECUT_GPU_LLAMA_ALL=1` runs two prompts of 16 tokens).
#[test]
fn gemma3_270m_on_wgpu_gives_the_cpus_greedy_tokens() {
    let gpu = Llm::open(
        edgecut_tests::gemma3_q4_k_m(),
        &LlmOptions::default().with_device(DeviceKind::Wgpu),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cpu = crate::gemma3::gemma();
    let fx = fixture("gemma3-270m.json");
    let all = std::env::var("EDGECUT_GPU_LLAMA_ALL").is_ok_and(|v| v == "1");
    let (n, prompts) = if all { (16, 2) } else { (6, 1) };
    for c in fx["cases"].as_array().unwrap().iter().take(prompts) {
        let prompt = ids(&c["ids"]);
        let (g, want) = (greedy(&gpu, &prompt, n), greedy(cpu, &prompt, n));
        let a = agreement(&g, &want);
        println!("gemma3 on wgpu, {}: {a}/{n} as the CPU", c["name"]);
        assert_eq!(g, want, "{}", c["name"]);
    }
}
