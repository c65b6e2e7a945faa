namespace RetriKT.MLNet.Knowledge;

/// <summary>Where a knowledge-store entry came from.</summary>
public enum KnowledgeSource : byte
{
    /// <summary>A labelled few-shot example (gold label; its soft label is one-hot unless the teacher scored it).</summary>
    FewShot = 0,
    /// <summary>A sample the tuned teacher generated (soft label = the teacher's probabilities over the labels).</summary>
    Generated = 1,
    /// <summary>Imported from JSONL or another tool.</summary>
    Imported = 2,
    /// <summary>A span or word-dropped copy of a generated sample, soft-labelled by the teacher on its own text (<c>StoreVariants</c>).</summary>
    Variant = 3,
    /// <summary>A text of the user's unlabelled data, soft-labelled by the teacher and filed under its most probable label (<c>UnlabeledText</c>).</summary>
    Unlabeled = 4,
}

/// <summary>How files name a <see cref="KnowledgeSource"/>: JSONL's <c>source</c> and a store view's Source column read it alike.</summary>
internal static class KnowledgeSourceNames
{
    /// <summary>
    /// The source <paramref name="name"/> names, in any case, or null. Names only: <c>Enum.TryParse</c> also takes "4"
    /// (Unlabeled) and "Generated, Imported" (1 | 2, which is Variant), so a mistyped source read as another one.
    /// </summary>
    public static KnowledgeSource? Parse(string name)
        => Enum.GetNames<KnowledgeSource>().Contains(name, StringComparer.OrdinalIgnoreCase) && Enum.TryParse(name, ignoreCase: true, out KnowledgeSource source)
            ? source : null;
}

/// <summary>
/// One labelled sample of a knowledge store: text (and second text for sentence-pair tasks), hard label index, the
/// teacher's soft label over the store's label set, the fidelity the teacher assigned to the intended label, and the
/// source. Texts may be null in a store saved without texts (embeddings and soft labels are what retrieval needs).
/// </summary>
/// <remarks>
/// An entry owns its soft label: the constructor and <c>with { SoftLabel = … }</c> copy the array given, so a caller
/// who fills one array for many entries, or changes it afterwards, changes no entry (a knowledge store saves and
/// retrieves with its own copy, and <see cref="KnowledgeStore.Entries"/> would otherwise show other values than those).
/// Treat <see cref="SoftLabel"/> as read-only. Two entries are equal when their contents are: texts (ordinal),
/// label, fidelity, source and the soft label's values.
/// </remarks>
public sealed record KnowledgeEntry(string? Text, string? Text2, int Label, float[] SoftLabel, float Fidelity, KnowledgeSource Source)
{
    private readonly float[] _softLabel = Own(SoftLabel);

    /// <summary>The teacher's probability per label of the store (the entry's own copy; do not write to it).</summary>
    public float[] SoftLabel { get => _softLabel; init => _softLabel = Own(value); }

    // A null soft label is kept as given: the store names it as a soft label of 0 values, with the entry's index.
    private static float[] Own(float[] softLabel) => softLabel is null ? null! : (float[])softLabel.Clone();

    /// <summary>Equal contents: texts (ordinal), label, fidelity, source and every soft-label value.</summary>
    public bool Equals(KnowledgeEntry? other)
        => other is not null && (ReferenceEquals(this, other)
            || string.Equals(Text, other.Text, StringComparison.Ordinal) && string.Equals(Text2, other.Text2, StringComparison.Ordinal)
               && Label == other.Label && Fidelity.Equals(other.Fidelity) && Source == other.Source
               && (_softLabel ?? []).AsSpan().SequenceEqual(other._softLabel ?? []) && (_softLabel is null) == (other._softLabel is null));

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Text, StringComparer.Ordinal);
        hash.Add(Text2, StringComparer.Ordinal);
        hash.Add(Label);
        hash.Add(Fidelity);
        hash.Add(Source);
        foreach (var p in _softLabel ?? []) hash.Add(p);
        return hash.ToHashCode();
    }

    /// <summary>A gold example with a one-hot soft label.</summary>
    public static KnowledgeEntry Gold(string text, string? text2, int label, int labelCount)
    {
        if ((uint)label >= (uint)labelCount)
            throw new ArgumentOutOfRangeException(nameof(label), $"Label index {label} is outside [0, {labelCount}).");
        var soft = new float[labelCount];
        soft[label] = 1f;
        return new KnowledgeEntry(text, text2, label, soft, 1f, KnowledgeSource.FewShot);
    }
}

/// <summary>
/// Produces the embeddings a knowledge store is searched with. Implemented by the student encoder
/// (RetrievalClassifier), so the store does not depend on the student's code. Embeddings are expected L2-normalised
/// (retrieval uses the inner product as cosine similarity); the store normalises defensively.
/// </summary>
public interface IStoreEncoder
{
    /// <summary>Embedding dimension.</summary>
    int Dimension { get; }

    /// <summary>Writes one embedding per input (row-major, <c>texts.Count × Dimension</c>) into <paramref name="destination"/>.</summary>
    void Encode(IReadOnlyList<(string Text, string? Text2)> texts, Span<float> destination);

    /// <summary>
    /// A stable identity of what this encoder computes (a content hash of its weights, tokenizer and settings), or
    /// null when unknown (the default). Equal fingerprints mean the same embeddings for the same text. A store embedded
    /// with this encoder records it (<see cref="KnowledgeStore.EncoderFingerprint"/>) and the knowledge retriever
    /// refuses queries from an encoder with another one (<see cref="EncoderProvenance"/>): two encoders of the same
    /// dimension would otherwise retrieve unrelated neighbours without a word.
    /// </summary>
    string? Fingerprint => null;
}
