using RetriKT.MLNet.Teacher;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>One labelled few-shot example as the trainer uses it.</summary>
internal sealed record PromptExample(string Text, string? Text2, int Label);

/// <summary>One sampled response: its label, visible prompt ids, generated ids and their log-probabilities at sampling time.</summary>
internal sealed record Rollout(int Label, string Context, int[] PromptIds, int[] ResponseIds, float[] SampleLogProbs, string Generated, bool Finished);

/// <summary>
/// The RL policy of RetriKT's stage 2 (and the model of stage 1): the frozen teacher with a trainable label-conditioned
/// soft prompt in front, plus a value head on the teacher's final hidden states. The layout of every sequence is
/// <c>[soft prompt][left padding][visible prompt ids][response ids][right padding]</c>; padding is masked and takes
/// no position, so training sees exactly what generation saw.
/// </summary>
internal sealed class SoftPromptPolicy
{
    public SoftPromptPolicy(TeacherModel teacher, TaskTemplate template, SoftPromptModule prompts, ValueHead valueHead)
    {
        Teacher = teacher;
        Template = template;
        Prompts = prompts;
        Value = valueHead;
        Tokenizer = teacher.Tokenizer ?? throw new InvalidOperationException("The teacher has no tokenizer; soft prompt training needs one.");
    }

    public TeacherModel Teacher { get; }
    public TaskTemplate Template { get; }
    public SoftPromptModule Prompts { get; }
    public ValueHead Value { get; }
    public TeacherTokenizer Tokenizer { get; }

    private bool AddsBos => Teacher.Config.Architecture == TeacherArchitecture.Llama && Tokenizer.BosId is not null;

    /// <summary>Visible prompt ids for a generation context (BOS for the LLaMA family, then the context text).</summary>
    public int[] PromptIds(string context)
    {
        var ids = context.Length == 0 ? [] : Tokenizer.Encode(context, addBos: false);
        return AddsBos ? [Tokenizer.BosId!.Value, .. ids] : ids;
    }

    /// <summary>Target ids for stage 1: the rendered sample plus EOS (so the prompt learns where a sample ends).</summary>
    public int[] TargetIds(PromptExample e)
    {
        // A second part continues its visible context (after a space), encoded as text after text (no SentencePiece dummy prefix).
        var ids = Tokenizer.EncodeContinuation(Template.RenderContinuation(e.Text, e.Text2), afterText: Template.Target == GenerationTarget.SecondPart);
        return Tokenizer.EosId is int eos ? [.. ids, eos] : ids;
    }

    public string ContextOf(PromptExample e) => Template.RenderContext(e.Text);

    /// <summary>
    /// Throws, naming <paramref name="where"/>, when the soft prompt and the ids of <paramref name="context"/> leave fewer
    /// than <paramref name="maxNewTokens"/> of the teacher's positions: a context that does not fit at all fails inside the
    /// teacher naming only a batch slot, and one that nearly fits has its samples cut short without a word.
    /// </summary>
    public void CheckGenerationFits(string context, int maxNewTokens, string where) => CheckRoomForSample(PromptIds(context).Length, maxNewTokens, where);

    /// <summary><see cref="CheckGenerationFits"/> for a context already encoded to <paramref name="ids"/> tokens.</summary>
    private void CheckRoomForSample(int ids, int maxNewTokens, string where)
    {
        int positions = Teacher.Config.MaxPositions, soft = Prompts.Length;
        if (soft + ids + maxNewTokens > positions)
            throw new ArgumentException($"{where}: the soft prompt ({soft} positions) and the context ({ids} tokens) leave {Math.Max(0, positions - soft - ids)} " +
                                        $"of the teacher's {positions} positions for a sample, fewer than MaxNewTokens = {maxNewTokens}; shorten the text, or lower MaxNewTokens or PromptTokens.");
    }

    /// <summary>
    /// Throws, naming the first row that does not fit, when a training example's soft prompt, context and sample (stage 1)
    /// exceed the teacher's positions, or its context leaves too few for <paramref name="maxNewTokens"/> (PPO rollouts,
    /// generation; <see cref="CheckGenerationFits"/>). Checked before training, not minutes into it.
    /// </summary>
    public void CheckFits(IReadOnlyList<PromptExample> examples, int maxNewTokens)
    {
        int positions = Teacher.Config.MaxPositions, soft = Prompts.Length;
        for (int i = 0; i < examples.Count; i++)
        {
            int ids = PromptIds(ContextOf(examples[i])).Length, sample = TargetIds(examples[i]).Length;
            if (soft + ids + sample > positions)
                throw new ArgumentException($"Row {i}: the soft prompt ({soft} positions), the context ({ids} tokens) and the sample ({sample} tokens with EOS) " +
                                            $"take {soft + ids + sample} positions, more than the teacher's {positions}; shorten the row's text or lower PromptTokens.");
            CheckRoomForSample(ids, maxNewTokens, $"Row {i}");
        }
    }

    /// <summary>The sample a rollout stands for, as the task's columns hold it: (first text, second text).</summary>
    public (string Text, string? Text2) SampleOf(Rollout r) => Template.SplitGenerated(
        Template.Target == GenerationTarget.SecondPart ? r.Context[..^Template.PairSeparator.Length] : "", r.Generated);

    /// <summary>Mean per-token negative log-likelihood of the examples under their labels' prompts (differentiable in the prompts).</summary>
    public Tensor SupervisedNll(IReadOnlyList<PromptExample> batch)
    {
        var prefixes = batch.Select(e => PromptIds(ContextOf(e))).ToList();
        var targets = batch.Select(TargetIds).ToList();
        var labels = tensor(batch.Select(e => (long)e.Label).ToArray(), device: Teacher.Device);
        var soft = Prompts.PromptsFor(labels, Teacher.DType);
        var logLikelihood = Teacher.ContinuationLogLikelihood(prefixes, targets, soft);
        var lengths = tensor(targets.Select(t => (float)t.Length).ToArray(), device: Teacher.Device);
        return logLikelihood.div(lengths).mean().neg();
    }

    /// <summary>Samples one response per (label, context) with the current prompts; <paramref name="cancellation"/> stops it at the next token.</summary>
    public List<Rollout> Sample(IReadOnlyList<(int Label, string Context)> requests, int maxNewTokens, double temperature, long seed,
        CancellationToken cancellation = default)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var labels = tensor(requests.Select(r => (long)r.Label).ToArray(), device: Teacher.Device);
        var prompts = requests.Select(r => PromptIds(r.Context)).ToList();
        var stops = Template.GenerationStops.Where(stop => stop != "\n" || !(Template.IsPair && Template.Target == GenerationTarget.WholeSample)).ToArray();
        var result = Teacher.Generate(new GenerationRequest
        {
            PromptIds = prompts,
            PrefixEmbeds = Prompts.PromptsFor(labels, Teacher.DType),
            MaxNewTokens = maxNewTokens,
            Temperature = temperature,
            Seed = seed,
            StopSequences = stops,
            Cancellation = cancellation,
        });
        return requests.Select((r, i) =>
        {
            var s = result.Sequences[i];
            var text = Template.CutAtStops(s.Text);
            return new Rollout(r.Label, r.Context, prompts[i], s.TokenIds, s.TokenLogProbs, text, s.FinishReason != "length");
        }).ToList();
    }

    /// <summary>
    /// Re-scores rollouts under the given prompts: per-token log-probabilities of the responses at
    /// <paramref name="temperature"/>, the response mask, and on request the values (hidden states detached: the value
    /// loss trains the head only) and the entropy of each position's distribution (a reading: no gradient). All
    /// <c>[B, R]</c>.
    /// </summary>
    public (Tensor LogProbs, Tensor? Values, Tensor Mask, Tensor? Entropy) Evaluate(IReadOnlyList<Rollout> rollouts, Tensor softPrompts, double temperature,
        bool withValues = true, bool withEntropy = true)
    {
        int b = rollouts.Count;
        int maxPrompt = rollouts.Max(r => r.PromptIds.Length), maxResponse = rollouts.Max(r => r.ResponseIds.Length);
        int width = maxPrompt + maxResponse;
        var ids = new long[b * width];
        var mask = new long[b * width];
        var responseIds = new long[b * maxResponse];
        var responseMask = new float[b * maxResponse];
        bool leftPadded = false;
        for (int i = 0; i < b; i++)
        {
            var r = rollouts[i];
            int offset = maxPrompt - r.PromptIds.Length;
            leftPadded |= offset > 0;
            for (int j = 0; j < r.PromptIds.Length; j++) { ids[i * width + offset + j] = r.PromptIds[j]; mask[i * width + offset + j] = 1; }
            for (int j = 0; j < r.ResponseIds.Length; j++)
            {
                ids[i * width + maxPrompt + j] = r.ResponseIds[j];
                mask[i * width + maxPrompt + j] = 1;
                responseIds[i * maxResponse + j] = r.ResponseIds[j];
                responseMask[i * maxResponse + j] = 1;
            }
        }
        var device = Teacher.Device;
        long p = softPrompts.shape[1];
        var embeds = cat([softPrompts, Teacher.Embed(tensor(ids, [b, width], device: device))], 1);
        // Right padding alone needs no mask in a causal model: a real token never sees the slots after it, and positions
        // count the same either way. Without a mask the fused causal attention kernel runs instead of the masked one.
        var fullMask = leftPadded ? cat([ones(b, p, ScalarType.Int64, device), tensor(mask, [b, width], device: device)], 1) : null;
        // Slot s predicts slot s + 1: response token j (slot p + maxPrompt + j) is predicted at slot p + maxPrompt + j − 1,
        // so the LM head runs on the last maxResponse + 1 slots and the very last one is dropped.
        var output = Teacher.Forward(embeds, fullMask, returnHiddenStates: withValues, logitsToKeep: maxResponse + 1);
        using var temperatureScalar = temperature.ToScalar(); // held across the call (see HeldScalars)
        // Scored as sampled: a tiny temperature divides the shifted logits, as generation does (1e-40 overflowed to NaN).
        var logits = Sampler.Scale(output.Logits.narrow(1, 0, maxResponse).to(ScalarType.Float32), temperature, temperatureScalar);
        var logp = logits.log_softmax(-1);
        var targets = tensor(responseIds, [b, maxResponse], device: device);
        var tokenLogp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
        var maskT = tensor(responseMask, [b, maxResponse], device: device);
        Tensor? entropy = null;
        if (withEntropy)
            using (no_grad()) entropy = PpoMath.Entropy(logp.detach());
        var values = withValues ? Value.forward(output.HiddenStates!.narrow(1, p + maxPrompt - 1, maxResponse).detach()).mul(maskT) : null;
        return (tokenLogp.mul(maskT), values, maskT, entropy);
    }
}
