using Microsoft.ML.Data;
using System.Text.Json.Serialization;

namespace RetriKT.WebApi;

/// <summary>The model's input row: the text column <c>Text</c>, and <c>Text2</c> for a sentence-pair model (unused otherwise).</summary>
public sealed class TextInput
{
    [ColumnName("Text")]
    public string Text { get; set; } = "";

    [ColumnName("Text2")]
    public string Text2 { get; set; } = "";
}

/// <summary>The model's output row: ML.NET's standard classifier columns (the label mapped back to its value).</summary>
public sealed class TextPrediction
{
    [ColumnName("PredictedLabel")]
    public string PredictedLabel { get; set; } = "";

    [ColumnName("Score")]
    public float[] Score { get; set; } = [];
}

/// <summary>Body of <c>POST /predict</c> and <c>POST /explain</c>.</summary>
/// <param name="Text">The text to classify (non-empty, at most <c>Serving:MaxTextLength</c> characters).</param>
/// <param name="Text2">
/// The second text, for a sentence-pair model only (a RetriKT model trained with a second text column): required there,
/// refused for a model of one text.
/// </param>
public sealed record PredictRequest(string? Text, string? Text2 = null);

/// <summary>A prediction: the label and the score of every label the model knows.</summary>
/// <param name="Label">The predicted label.</param>
/// <param name="Scores">Score per label (label names from the model's Score slot names; "0", "1", ... without them).</param>
/// <param name="ModelGeneration">Which load of the model answered (1 = first load, +1 per hot reload).</param>
public sealed record PredictResponse(string Label, IReadOnlyDictionary<string, float> Scores, long ModelGeneration);

/// <summary>One retrieved knowledge-store sample behind a prediction.</summary>
/// <param name="Text">The stored sample (its first text for a sentence-pair task).</param>
/// <param name="Label">Its label.</param>
/// <param name="Similarity">Its similarity to the query.</param>
/// <param name="Text2">Its second text for a sentence-pair task; left out otherwise.</param>
public sealed record Neighbour(string Text, string Label, float Similarity,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Text2 = null);

/// <summary>One part of a RetriKT prediction: what it says alone and its share of the prediction.</summary>
/// <param name="Part"><c>head</c>, <c>retrieval</c> (neighbours by the student's embedding) or <c>termMatch</c> (by TF-IDF).</param>
/// <param name="Weight">Its share: 1 − λ − μ, λ or μ; the prediction's scores are the parts' scores mixed by these weights.</param>
/// <param name="Scores">Probability per label from this part alone.</param>
/// <param name="Neighbours">The store samples this part retrieved (none for the head).</param>
public sealed record ExplainedPart(string Part, double Weight, IReadOnlyDictionary<string, float> Scores, IReadOnlyList<Neighbour> Neighbours);

/// <summary>A prediction plus the neighbours the retrieval classifier used, and every part behind it.</summary>
/// <param name="Prediction">The prediction.</param>
/// <param name="Neighbours">
/// The retrieved neighbours of the retrieval part that weighs more (empty for models without retrieval).
/// </param>
/// <param name="Parts">The head, embedding retrieval and (with a term index) term match, each alone (empty for other models).</param>
public sealed record ExplainResponse(PredictResponse Prediction, IReadOnlyList<Neighbour> Neighbours, IReadOnlyList<ExplainedPart> Parts);

/// <summary>Serving limits (section <c>Serving</c>).</summary>
public sealed class ServingOptions
{
    /// <summary>Longest accepted text, in characters.</summary>
    public int MaxTextLength { get; set; } = 2000;

    /// <summary>Reload the model when the file at <c>ModelPath</c> is replaced.</summary>
    public bool WatchModelFile { get; set; } = true;
}
