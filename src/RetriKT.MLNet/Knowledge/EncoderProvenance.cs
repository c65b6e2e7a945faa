using Microsoft.ML;
using Microsoft.ML.Data;

namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// Which encoder produced a column of embeddings, so that the knowledge retriever never searches a store with queries
/// from another encoder: two encoders of the same dimension (all-MiniLM-L6-v2 and arctic-embed-xs are both 384-d, as
/// are two students trained with different seeds) give vectors of the same shape whose neighbours are unrelated.
/// </summary>
/// <remarks>
/// <para>A store records its encoder's <see cref="IStoreEncoder.Fingerprint"/> when it is embedded
/// (<see cref="KnowledgeStore.EncoderFingerprint"/>). A query column states its encoder with the annotation
/// <see cref="AnnotationName"/> (a Text value: <see cref="Annotate"/> adds it to a column of a
/// <see cref="SchemaDefinition"/>), or the retriever's options state it
/// (<see cref="KnowledgeRetrieverEstimator.Options.QueryEncoderFingerprint"/>).</para>
/// <para>The retriever's Fit, and its transformer's output schema and Transform (a loaded model too), fail with one line
/// naming both fingerprints when they differ. When either side is unknown (a store embedded from plain numbers or by an
/// encoder without a fingerprint, a store file older than format version 2, a query column without the annotation)
/// nothing is checked: the fingerprint is a safeguard, not a requirement. The estimator's
/// <see cref="KnowledgeRetrieverEstimator.GetOutputSchema"/> sees only the annotation's type, not its value, and does
/// not check.</para>
/// </remarks>
public static class EncoderProvenance
{
    /// <summary>Name of the query column's annotation that holds its encoder's fingerprint (a Text value).</summary>
    public const string AnnotationName = "EncoderFingerprint";

    /// <summary>Marks <paramref name="column"/> (of a <see cref="SchemaDefinition"/>, as <c>LoadFromEnumerable</c> takes) as embeddings from the encoder with <paramref name="fingerprint"/>.</summary>
    public static void Annotate(SchemaDefinition.Column column, string fingerprint)
    {
        ArgumentNullException.ThrowIfNull(column);
        ArgumentException.ThrowIfNullOrWhiteSpace(fingerprint);
        column.AddAnnotation(AnnotationName, fingerprint.AsMemory(), TextDataViewType.Instance);
    }

    /// <summary>The encoder fingerprint that <paramref name="column"/> carries as its <see cref="AnnotationName"/> annotation, or null.</summary>
    public static string? Of(DataViewSchema.Column column)
    {
        if (column.Annotations.Schema.GetColumnOrNull(AnnotationName) is not { Type: TextDataViewType }) return null;
        ReadOnlyMemory<char> value = default;
        column.Annotations.GetValue(AnnotationName, ref value);
        return value.IsEmpty ? null : value.ToString();
    }

    /// <summary>
    /// Throws, in one line naming both, when the store's and the queries' fingerprints are both known and differ.
    /// <paramref name="queries"/> says where the query fingerprint was stated.
    /// </summary>
    internal static void Check(string? store, string? query, string queries)
    {
        if (store is null || query is null || string.Equals(store, query, StringComparison.Ordinal)) return;
        throw new ArgumentException($"{queries} says the query embeddings come from encoder {query}, but the knowledge store's embeddings come from encoder {store}: " +
                                    "retrieval across two encoders finds unrelated neighbours. Embed the store with the query encoder (store.WithEmbeddings(encoder)) " +
                                    "or the queries with the store's encoder.");
    }
}
