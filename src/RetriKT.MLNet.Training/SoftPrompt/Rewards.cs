using System.Numerics.Tensors;
using RetriKT.MLNet.Knowledge;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>One generated sample of a PPO rollout, as the reward sees it.</summary>
/// <param name="Label">Index of the label the sample was generated for.</param>
/// <param name="Text">First text (the given context for second-part generation, else the generated text).</param>
/// <param name="Text2">Second text for pair tasks.</param>
/// <param name="Generated">The generated part only.</param>
/// <param name="TokenCount">Generated tokens.</param>
/// <param name="Finished">Whether generation stopped at an end token (not at the length limit).</param>
public sealed record RolloutSample(int Label, string Text, string? Text2, string Generated, int TokenCount, bool Finished);

/// <summary>A sample's reward and its parts (for logging).</summary>
public sealed record RewardBreakdown(double Total, double Fidelity, double Diversity, double Penalty);

/// <summary>Scores a batch of rollout samples. Pluggable: pass your own to the trainer's options.</summary>
public interface IRewardFunction
{
    /// <summary>One breakdown per sample, in order.</summary>
    IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples);

    /// <summary>
    /// As <see cref="Score(IReadOnlyList{RolloutSample})"/>, for the trainer: a reward that scores with a model checks
    /// <paramref name="cancellation"/> between its passes, so that a cancelled run stops inside the scoring rather than
    /// after it. The default ignores the token (a reward written before it existed still works).
    /// </summary>
    IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples, CancellationToken cancellation) => Score(samples);
}

/// <summary>Probability that a sample carries each label (the fidelity classifier; default: the teacher's verbalizer).</summary>
public interface ILabelScorer
{
    /// <summary>Label probabilities per sample (rows sum to 1).</summary>
    float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples);

    /// <summary>
    /// As <see cref="Probabilities(IReadOnlyList{ValueTuple{string, string}})"/>, checking <paramref name="cancellation"/>
    /// between the scorer's passes (the default ignores it: a scorer written before it existed still works).
    /// </summary>
    float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples, CancellationToken cancellation) => Probabilities(samples);
}

/// <summary>Weights of the default reward.</summary>
public sealed record RewardWeights
{
    /// <summary>Weight of fidelity p(intended label). Default 1.</summary>
    public double Fidelity { get; init; } = 1.0;
    /// <summary>Weight of diversity (novelty against the batch and recent samples, and distinct-2). Default 0.5.</summary>
    public double Diversity { get; init; } = 0.5;
    /// <summary>Weight of the repetition penalty (share of repeated word trigrams). Default 1.</summary>
    public double Repetition { get; init; } = 1.0;
    /// <summary>Penalty for degenerate length (fewer than the template's MinWords, or cut at the length limit). Default 0.5.</summary>
    public double Length { get; init; } = 0.5;
    /// <summary>How many recent samples novelty is measured against (besides the batch). Default 256.</summary>
    public int Memory { get; init; } = 256;

    /// <summary>
    /// Throws, naming the weight and the value, unless every weight is finite and >= 0 and <see cref="Memory"/> >= 0:
    /// checked for the options' weights and for a <see cref="RetriKTReward"/> built with its own (a negative memory
    /// failed at its first PPO step with "Queue empty.").
    /// </summary>
    internal void Validate()
    {
        SoftPromptPpoOptions.AtLeastZeroFinite(Fidelity, "RewardWeights.Fidelity");
        SoftPromptPpoOptions.AtLeastZeroFinite(Diversity, "RewardWeights.Diversity");
        SoftPromptPpoOptions.AtLeastZeroFinite(Repetition, "RewardWeights.Repetition");
        SoftPromptPpoOptions.AtLeastZeroFinite(Length, "RewardWeights.Length");
        SoftPromptPpoOptions.AtLeastZero(Memory, "RewardWeights.Memory");
    }
}

/// <summary>
/// RetriKT's default reward: <c>w_f·p(intended label) + w_d·diversity − w_r·repetition − w_l·length_penalty</c>; a
/// sample of fewer than the template's MinWords words (one the store would drop) gets only <c>−w_l</c>.
/// Diversity = ½(1 − max cosine to the other samples of the batch and the recent memory, on hashed word uni+bigram
/// vectors) + ½·distinct-2 of the sample; repetition = share of repeated word trigrams inside the sample.
/// </summary>
public sealed class RetriKTReward : IRewardFunction
{
    private readonly ILabelScorer _scorer;
    private readonly RewardWeights _weights;
    private readonly int _minWords;
    private readonly Queue<float[]> _memory = new();

    /// <summary>Creates the reward over a fidelity classifier.</summary>
    public RetriKTReward(ILabelScorer scorer, RewardWeights? weights = null, int minWords = 3)
    {
        _scorer = scorer ?? throw new ArgumentNullException(nameof(scorer));
        _weights = weights ?? new RewardWeights();
        _weights.Validate();
        _minWords = minWords;
    }

    /// <summary>
    /// This reward with an empty memory of recent samples, for a new training run: a reward given in
    /// <see cref="SoftPromptPpoOptions.Reward"/> kept the previous Fit's samples, so the same trainer fitted again with
    /// the same seed measured novelty against them and trained other prompts.
    /// </summary>
    internal RetriKTReward ForNewRun() => new(_scorer, _weights, _minWords);

    /// <inheritdoc/>
    public IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples) => Score(samples, CancellationToken.None);

    /// <summary>
    /// As <see cref="Score(IReadOnlyList{RolloutSample})"/>; the fidelity classifier checks <paramref name="cancellation"/>
    /// before each of its teacher passes (the verbalizer: one per <see cref="VerbalizerClassifier.BatchSize"/> samples).
    /// </summary>
    public IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples, CancellationToken cancellation)
    {
        var probabilities = _scorer.Probabilities(samples.Select(s => (s.Text, s.Text2)).ToList(), cancellation);
        CheckProbabilities(probabilities, samples);
        var vectors = samples.Select(s => TextStatistics.HashedNgrams(s.Generated)).ToList();
        var result = new RewardBreakdown[samples.Count];
        for (int i = 0; i < samples.Count; i++)
        {
            var s = samples[i];
            // A sample too short for the store earns neither fidelity nor diversity, only its penalty. An empty text
            // otherwise scores full diversity (no n-gram matches anything) and the classifier's fixed guess for ""
            // as fidelity: on SST-2 seed 87 at PPO rate 0.03 a label's prompt learned to stop at once, and 8,721 of
            // its store's 20,992 generated samples were empty.
            bool degenerate = TextStatistics.Words(s.Generated).Count < _minWords;
            double fidelity = degenerate ? 0 : probabilities[i][s.Label];
            double maxSimilarity = 0;
            for (int j = 0; j < samples.Count; j++)
                if (j != i) maxSimilarity = Math.Max(maxSimilarity, TensorPrimitives.Dot(vectors[i], vectors[j]));
            foreach (var m in _memory) maxSimilarity = Math.Max(maxSimilarity, TensorPrimitives.Dot(vectors[i], m));
            double diversity = degenerate ? 0 : 0.5 * (1 - maxSimilarity) + 0.5 * TextStatistics.DistinctN(s.Generated, 2);
            // Too short, it gets −w_l and nothing else, as documented: with MinWords above 4 such a sample could
            // otherwise repeat a trigram and pay the repetition weight on top (with MinWords ≤ 4 it has no repeat).
            double repetition = degenerate ? 0 : TextStatistics.RepeatedTrigramShare(s.Generated);
            double length = degenerate ? 1 : s.Finished ? 0 : 0.5;
            double penalty = _weights.Repetition * repetition + _weights.Length * length;
            result[i] = new RewardBreakdown(_weights.Fidelity * fidelity + _weights.Diversity * diversity - penalty, fidelity, diversity, penalty);
        }
        foreach (var v in vectors)
        {
            _memory.Enqueue(v);
            while (_memory.Count > _weights.Memory) _memory.Dequeue();
        }
        return result;
    }

    /// <summary>
    /// Throws unless the scorer gave every sample one probability per label (at least 2, as many for every sample, the
    /// sample's label among them), each finite and >= 0, summing to 1: a scorer of the user's that returned scores
    /// ([3, -1]) trained PPO on a "fidelity" of 3 without a word, and one value per sample failed as an index out of range.
    /// </summary>
    private static void CheckProbabilities(float[][]? probabilities, IReadOnlyList<RolloutSample> samples)
    {
        if (probabilities is null || probabilities.Length != samples.Count)
            throw new InvalidOperationException($"RetriKTReward: the label scorer returned {(probabilities is null ? "null" : $"{probabilities.Length} probability rows")} " +
                $"for {samples.Count} samples; expected one per sample.");
        if (samples.Count == 0) return;
        int labels = probabilities[0]?.Length ?? 0;
        static string Count(int n) => n == 1 ? "1 probability" : $"{n} probabilities";
        if (labels < 2)
            throw new InvalidOperationException($"RetriKTReward: the label scorer gave sample 0 {Count(labels)}; expected one per label, at least 2.");
        for (int i = 0; i < samples.Count; i++)
        {
            var p = probabilities[i];
            if (p is null || p.Length != labels)
                throw new InvalidOperationException($"RetriKTReward: the label scorer gave sample {i} {Count(p?.Length ?? 0)} and sample 0 {labels}; expected one per label for every sample.");
            if ((uint)samples[i].Label >= (uint)labels)
                throw new InvalidOperationException($"RetriKTReward: sample {i} was generated for label index {samples[i].Label}, but the label scorer gave it {Count(labels)}; expected one per label.");
            if (KnowledgeStore.SoftLabelError(p, labels) is { } error)
                throw new InvalidOperationException($"RetriKTReward: the label scorer gave sample {i} the probabilities [{KnowledgeStore.SoftLabelText(p)}]: {error}");
        }
    }
}

/// <summary>Word-level statistics for diversity and degeneracy (lower-cased words split on non-letters/digits).</summary>
public static class TextStatistics
{
    private const int HashDimension = 1024;

    /// <summary>Lower-cased words of <paramref name="text"/>.</summary>
    public static List<string> Words(string text)
    {
        var words = new List<string>();
        int start = -1;
        for (int i = 0; i <= text.Length; i++)
        {
            bool wordChar = i < text.Length && (char.IsLetterOrDigit(text[i]) || text[i] == '\'');
            if (wordChar && start < 0) start = i;
            else if (!wordChar && start >= 0) { words.Add(text[start..i].ToLowerInvariant()); start = -1; }
        }
        return words;
    }

    /// <summary>Distinct n-grams / all n-grams of one text (1 when it has none).</summary>
    public static double DistinctN(string text, int n) => DistinctN([text], n);

    /// <summary>Distinct n-grams / all n-grams over a corpus (the usual distinct-n diversity metric).</summary>
    public static double DistinctN(IEnumerable<string> texts, int n)
    {
        var seen = new HashSet<string>();
        int total = 0;
        foreach (var text in texts)
        {
            var w = Words(text);
            for (int i = 0; i + n <= w.Count; i++) { seen.Add(string.Join(' ', w.Skip(i).Take(n))); total++; }
        }
        return total == 0 ? 1 : (double)seen.Count / total;
    }

    /// <summary>Share of word trigrams that occur earlier in the same text.</summary>
    public static double RepeatedTrigramShare(string text)
    {
        var w = Words(text);
        if (w.Count < 4) return 0;
        var seen = new HashSet<(string, string, string)>();
        int repeated = 0, total = 0;
        for (int i = 0; i + 3 <= w.Count; i++, total++)
            if (!seen.Add((w[i], w[i + 1], w[i + 2]))) repeated++;
        return (double)repeated / total;
    }

    /// <summary>L2-normalised hashed bag of word unigrams and bigrams (a cheap, teacher-free sentence vector).</summary>
    public static float[] HashedNgrams(string text)
    {
        var v = new float[HashDimension];
        var w = Words(text);
        for (int i = 0; i < w.Count; i++)
        {
            v[Bucket(w[i])] += 1;
            if (i + 1 < w.Count) v[Bucket(w[i] + " " + w[i + 1])] += 1;
        }
        float norm = TensorPrimitives.Norm(v);
        if (norm > 0) TensorPrimitives.Divide(v, norm, v);
        return v;
    }

    private static int Bucket(string s)
    {
        uint h = 2166136261;
        foreach (var c in s) { h ^= c; h *= 16777619; }
        return (int)(h % HashDimension);
    }
}
