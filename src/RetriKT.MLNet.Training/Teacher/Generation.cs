using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Teacher;

/// <summary>What to generate and how to sample it. Give either <see cref="Prompts"/> or <see cref="PromptIds"/>.</summary>
public sealed class GenerationRequest
{
    /// <summary>Text prompts, one per batch row (encoded with the teacher's tokenizer).</summary>
    public IReadOnlyList<string>? Prompts { get; init; }
    /// <summary>Prompt token ids, one array per batch row (used as is; <see cref="AddBos"/> does not apply).</summary>
    public IReadOnlyList<int[]>? PromptIds { get; init; }
    /// <summary>Prepend BOS to text prompts. Null: yes for the LLaMA family, no for GPT-2 (as HF does).</summary>
    public bool? AddBos { get; init; }
    /// <summary>
    /// Optional soft prompt <c>[P, hidden]</c> (or <c>[B, P, hidden]</c>) prepended to every row's token embeddings.
    /// Used as given (no gradient during generation).
    /// </summary>
    public Tensor? PrefixEmbeds { get; init; }
    /// <summary>Most tokens to generate per row. Default 32. Capped per row so that the row's prefix + prompt + output fit the model's context (its neighbours' lengths play no part).</summary>
    public int MaxNewTokens { get; init; } = 32;
    /// <summary>Sampling temperature; 0 means greedy (argmax). Default 0. Any T &gt; 0 is safe: a tiny one (1e-40) samples as its limit does, greedy's tokens, each with log-probability 0.</summary>
    public double Temperature { get; init; }
    /// <summary>
    /// One temperature per row, each meaning what <see cref="Temperature"/> means for its row (0: greedy), or null for
    /// <see cref="Temperature"/> on every row. Rows at temperatures of their own share one call (a server batching
    /// requests that each come with theirs); every row still draws from the one generator. Default null.
    /// </summary>
    public IReadOnlyList<double>? RowTemperatures { get; init; }
    /// <summary>Keep only the k most likely tokens before sampling; 0 disables. Default 0.</summary>
    public int TopK { get; init; }
    /// <summary>Nucleus sampling: keep the smallest set of tokens whose probability reaches p; 1 disables. Default 1.</summary>
    public double TopP { get; init; } = 1;
    /// <summary>CTRL-style repetition penalty on tokens already in the row (prompt + output); 1 disables. Default 1.</summary>
    public double RepetitionPenalty { get; init; } = 1;
    /// <summary>Ids that end a row (kept as its last token). Null: the config's EOS ids plus the tokenizer's EOS.</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }
    /// <summary>Strings that end a row once the decoded output contains one (the text is cut after it). Needs the teacher's tokenizer.</summary>
    public IReadOnlyList<string>? StopSequences { get; init; }
    /// <summary>
    /// Seed of the per-call torch.Generator; the same seed gives the same samples for the same rows in the same order
    /// (each step draws every row from the one generator, so another batch size or row order draws other samples, row 0
    /// included). Null: a random seed.
    /// </summary>
    public long? Seed { get; init; }
    /// <summary>Reuse keys/values of earlier positions (much faster; identical results). Default true.</summary>
    public bool UseKvCache { get; init; } = true;
    /// <summary>
    /// Checked before the prefill and before each decoding step: once it fires, <see cref="TeacherModel.Generate"/>
    /// throws <see cref="OperationCanceledException"/> and returns nothing (a server stops a call whose clients have all
    /// left). A call that is not cancelled computes exactly what it computes without a token.
    /// </summary>
    public CancellationToken Cancellation { get; init; }
    /// <summary>
    /// Decode every step with torch even where the managed CPU path (<see cref="ManagedLlamaDecoder"/>) would serve: for
    /// tests and the bench, which compare the two paths side by side.
    /// </summary>
    internal bool TorchDecode { get; init; }
}

/// <summary>One generated row.</summary>
/// <param name="PromptIds">The prompt ids the row started from (after BOS handling; excludes the soft prompt).</param>
/// <param name="TokenIds">Generated ids, including a final stop token when one ended the row.</param>
/// <param name="TokenLogProbs">
/// Log-probability of each generated id under the model at the request's temperature (1 when greedy), before top-k,
/// top-p and repetition penalty: the quantity PPO's ratio needs, and what <see cref="TeacherModel.Forward"/> reproduces.
/// </param>
/// <param name="Text">Decoded output (special tokens left out; cut after a matched stop sequence).</param>
/// <param name="FinishReason">"stop_token", "stop_sequence" or "length".</param>
public sealed record GeneratedSequence(int[] PromptIds, int[] TokenIds, float[] TokenLogProbs, string Text, string FinishReason);

/// <summary>The rows of a <see cref="TeacherModel.Generate"/> call, in request order.</summary>
public sealed record GenerationResult(IReadOnlyList<GeneratedSequence> Sequences);

/// <summary>Output of <see cref="TeacherModel.Forward"/>.</summary>
/// <param name="Logits">Next-token logits <c>[B, T, V]</c>.</param>
/// <param name="HiddenStates">Final (normed) hidden states <c>[B, T, H]</c> when requested, else null.</param>
public sealed record CausalLMOutput(Tensor Logits, Tensor? HiddenStates);

/// <summary>Logit processing and token choice for one decoding step (HF order: penalty, temperature, top-k, top-p).</summary>
internal static class Sampler
{
    /// <summary>
    /// Temperatures below this divide logits shifted by their row maximum, in float64. Plainly divided, logits / 1e-40
    /// overflow float32 to ±∞ and softmax turns them into NaN (a failed call). Ordinary temperatures keep the plain float32
    /// division: the shift changes the last bits of every sampled step, and the measured stores were sampled without it.
    /// </summary>
    public const double ShiftedBelowTemperature = 1e-3;

    /// <summary>
    /// <paramref name="logits"/> divided by the sampling temperature T &gt; 0 (<paramref name="held"/>, its held Scalar). For a
    /// tiny T, <c>(logits − row max) / T</c>: each row's most probable tokens get 0 and the others a large negative or −∞,
    /// so the distribution tends to greedy's as T does, with no NaN for any T &gt; 0. Differentiable (the shift is a
    /// constant to the gradient, as log-softmax is shift-invariant).
    /// </summary>
    public static Tensor Scale(Tensor logits, double temperature, Scalar held)
    {
        if (temperature >= ShiftedBelowTemperature) return logits.div(held);
        using var wide = logits.to(ScalarType.Float64);
        using var constant = wide.detach();
        using var rowMax = constant.amax([-1], keepdim: true);
        using var shifted = wide.sub(rowMax);
        using var scaled = shifted.div(held);
        return scaled.to(ScalarType.Float32);
    }

    public static Tensor ApplyRepetitionPenalty(Tensor logits, Tensor seen, double penalty)
    {
        if (penalty == 1) return logits;
        using var penaltyScalar = penalty.ToScalar(); // held across the calls (see HeldScalars)
        var penalized = where(logits.gt(HeldScalars.Zero), logits.div(penaltyScalar), logits.mul(penaltyScalar));
        return where(seen, penalized, logits);
    }

    public static Tensor TopK(Tensor logits, int k)
    {
        if (k <= 0 || k >= logits.shape[^1]) return logits;
        var kth = logits.topk(k, -1).values.narrow(-1, k - 1, 1);
        return logits.masked_fill(logits.lt(kth), HeldScalars.NegativeInfinity);
    }

    public static Tensor TopP(Tensor logits, double p)
    {
        if (p >= 1) return logits;
        var (sorted, order) = logits.sort(-1, descending: true);
        var probs = sorted.softmax(-1);
        // Drop a token when the tokens before it already reach p (mass >= p, as HF's top-p: the kept set is the smallest
        // whose mass reaches p). The most probable token is always kept: a p below float32's range (1e-300) compares as
        // 0, which the empty mass before it reaches, and a row with every token dropped sampled NaN (a failed call).
        using var threshold = p.ToScalar(); // held across the call (see HeldScalars)
        var remove = probs.cumsum(-1).sub(probs).ge(threshold);
        remove.narrow(-1, 0, 1).zero_();
        var removeOriginal = zeros_like(remove).scatter(-1, order, remove);
        return logits.masked_fill(removeOriginal, HeldScalars.NegativeInfinity);
    }

    /// <summary>
    /// One token per row of <paramref name="probabilities"/> <c>[B, V]</c>, drawn from <paramref name="generator"/>; ids
    /// <c>[B]</c> on the probabilities' device. Off the CPU the draw runs on a CPU copy: TorchSharp 0.107 makes every
    /// Generator a CPU one (its native constructor ignores the device; dotnet/TorchSharp#1194), and libtorch refuses a CPU
    /// generator for a CUDA tensor's draw ("Expected a 'cuda' device type for generator"), which failed every sampled
    /// generation on a GPU. The copy is one [B, V] row set per step, and a seed then draws as it does on the CPU.
    /// </summary>
    public static Tensor Draw(Tensor probabilities, Generator generator)
    {
        if (probabilities.device_type == DeviceType.CPU) return probabilities.multinomial(1, generator: generator).squeeze(1);
        using var onCpu = probabilities.cpu();
        using var drawn = onCpu.multinomial(1, generator: generator);
        return drawn.squeeze(1).to(probabilities.device);
    }
}
