using Microsoft.ML;
using RetriKT.MLNet.SoftPrompt;

namespace RetriKT.MLNet.Pipeline;

/// <summary>One labelled example with RetriKT's conventional column names (Text, Text2, Label).</summary>
public sealed class TextPairRow
{
    /// <summary>First text.</summary>
    public string Text { get; set; } = "";
    /// <summary>Second text of a pair task (empty string for single-sentence tasks).</summary>
    public string Text2 { get; set; } = "";
    /// <summary>Label value as text.</summary>
    public string Label { get; set; } = "";
}

/// <summary>
/// A low-resource task: the few-shot training split, the few-shot dev split (for model selection only) and the
/// evaluation split (the official dev set; never tune on it), with its label set and template.
/// </summary>
public sealed record FewShotTask(string Name, int? Seed, IReadOnlyList<string> Labels, TaskTemplate Template,
    IReadOnlyList<TextPairRow> Train, IReadOnlyList<TextPairRow> Dev, IReadOnlyList<TextPairRow> Test)
{
    /// <summary>Whether examples have a second text.</summary>
    public bool IsPair => Template.IsPair;

    /// <summary>A split as an IDataView with columns Text, Text2, Label (strings).</summary>
    public static IDataView ToDataView(MLContext mlContext, IReadOnlyList<TextPairRow> rows) => mlContext.Data.LoadFromEnumerable(rows);

    /// <summary>
    /// The "majority class" reference row as LM-BFF reports it: the share of the most frequent label in
    /// <see cref="Test"/> (few-shot training splits are balanced, so the training majority is a tie).
    /// </summary>
    public double MajorityAccuracy() => Test.GroupBy(r => r.Label).Max(g => g.Count()) / (double)Test.Count;
}
