//! SmolLM2 end to end on the GPU backend through wgpu (lavapipe on a machine without a GPU):
//! 32 greedy tokens on every fixture prompt against the CPU backend's and PyTorch's, and the
//! next-token logits against PyTorch's top 5. On lavapipe a prompt takes about a minute, so by
//! default two prompts run (a plain text and a chat); `EDGECUT_GPU_LLAMA_ALL=1` runs all ten.
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
        let (name, prompt, want) = (
            c["name"].as_str().unwrap(),
            ids(&c["ids"]),
            ids(&c["greedy"]),
        );
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
