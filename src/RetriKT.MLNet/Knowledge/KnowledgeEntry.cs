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

/// <summary>
/// One labelled sample of a knowledge store: text (and second text for sentence-pair tasks), hard label index, the
/// teacher's soft label over the store's label set, the fidelity the teacher assigned to the intended label, and the
/// source. Texts may be null in a store saved without texts (embeddings and soft labels are what retrieval needs).
/// </summary>
public sealed record KnowledgeEntry(string? Text, string? Text2, int Label, float[] SoftLabel, float Fidelity, KnowledgeSource Source)
{
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
}
