namespace RetriKT.MLNet.Student;

/// <summary>
/// How a retrieval student combines its parts into one label distribution:
/// p = (1 − λ − μ)·p_head + λ·p_knn + μ·p_terms, in the float steps the student itself takes (first the term match into
/// the head's scores, then the neighbours' vote into that), and the label it then predicts.
/// </summary>
/// <remarks>
/// The student scores through these methods, and they are public so that a grid over λ and μ can be read from its parts
/// scored once each, as the student with those weights would score (bit for bit): p_head from
/// <c>WithRetrievalWeight(0, 0)</c>, p_knn from <c>WithRetrievalWeight(1, 0)</c>, p_terms from <c>WithRetrievalWeight(0, 1)</c>.
/// Scoring the parts once matters for a frozen-encoder student, which embeds the rows again on every pass.
/// <code language="csharp">
/// var mixed = new float[head.Length];
/// RetrievalMix.Combine(head, knn, terms, lambda: 0.25, mu: 0.5, mixed);
/// int predicted = RetrievalMix.ArgMax(mixed);
/// </code>
/// </remarks>
public static class RetrievalMix
{
    /// <summary>
    /// scores ← (1 − μ')·scores + μ'·p_terms with μ' = μ / (1 − λ), so that after <see cref="MixNeighbors"/> takes λ of
    /// the total the result is (1 − λ − μ)·p_head + λ·p_knn + μ·p_terms. Nothing to do when λ ≥ 1 (retrieval alone).
    /// </summary>
    public static void MixTermMatch(Span<float> scores, ReadOnlySpan<float> termMatch, double lambda, double mu)
    {
        CheckLengths(scores, termMatch, nameof(termMatch));
        if (lambda >= 1) return;
        float m = (float)(mu / (1 - lambda));
        for (int i = 0; i < scores.Length; i++) scores[i] = (1 - m) * scores[i] + m * termMatch[i];
    }

    /// <summary>scores ← (1 − λ)·scores + λ·p_knn: the neighbours' soft vote takes λ of the total.</summary>
    public static void MixNeighbors(Span<float> scores, ReadOnlySpan<float> neighbors, double lambda)
    {
        CheckLengths(scores, neighbors, nameof(neighbors));
        float a = (float)lambda, c = (float)(1 - lambda);
        for (int i = 0; i < scores.Length; i++) scores[i] = c * scores[i] + a * neighbors[i];
    }

    /// <summary>
    /// destination ← (1 − λ − μ)·head + λ·neighbors + μ·termMatch, as the student with weights (λ, μ) scores a row whose
    /// parts alone score <paramref name="head"/>, <paramref name="neighbors"/> and <paramref name="termMatch"/>. Where
    /// no store entry shares a word with the row, the term-match part alone is the head's own scores and the student
    /// leaves it out; so does this (a term-match part equal to the head's is not mixed in).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">λ or μ outside [0, 1], or λ + μ &gt; 1.</exception>
    public static void Combine(ReadOnlySpan<float> head, ReadOnlySpan<float> neighbors, ReadOnlySpan<float> termMatch,
        double lambda, double mu, Span<float> destination)
    {
        RetrievalWeights.Checked(lambda, mu);
        CheckLengths(destination, head, nameof(head));
        head.CopyTo(destination);
        if (mu > 0 && !termMatch.SequenceEqual(head)) MixTermMatch(destination, termMatch, lambda, mu);
        if (lambda > 0) MixNeighbors(destination, neighbors, lambda);
    }

    /// <summary>The index of the largest score; the first of equal ones (the label order breaks ties).</summary>
    public static int ArgMax(ReadOnlySpan<float> scores)
    {
        int best = 0;
        for (int i = 1; i < scores.Length; i++) if (scores[i] > scores[best]) best = i;
        return best;
    }

    private static void CheckLengths(ReadOnlySpan<float> scores, ReadOnlySpan<float> part, string name)
    {
        if (part.Length != scores.Length)
            throw new ArgumentException($"The part holds {part.Length} scores, expected {scores.Length} (one per label).", name);
    }
}
