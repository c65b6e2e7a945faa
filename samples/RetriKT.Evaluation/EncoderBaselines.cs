using System.Collections.Concurrent;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Pipeline;

namespace RetriKT.Evaluation;

/// <summary>
/// The baseline a .NET user would pick instead of RetriKT (SetFit-style, without the contrastive fine-tuning): frozen
/// pretrained sentence embeddings (the package's pooling, unit L2 norm) and ML.NET's <c>LbfgsMaximumEntropy</c>
/// (L1 0, L2 0.01) trained on the few-shot training split, scored on the task's evaluation split. Sentence pairs are
/// featurised SBERT-style as [u, v, |u − v|, u ⊙ v]. No teacher is involved. One entry point: <see cref="Run"/>.
/// </summary>
public static class EncoderBaselines
{
    /// <summary>L2 regularisation of the linear head (the issue's reference setting).</summary>
    public const float L2 = 0.01f;

    private const string LabelKey = "LabelKey";

    private static readonly ConcurrentDictionary<string, BertSentenceEncoder> Encoders = new(StringComparer.Ordinal);
    private static readonly ConcurrentDictionary<(string Row, string Text), float[]> Embeddings = new();

    /// <summary>Whether <paramref name="row"/> is one of this file's rows.</summary>
    public static bool Handles(string row) => row is Rows.EncoderLogRegMiniLM or Rows.EncoderLogRegArcticXs;

    /// <summary>The package behind a row.</summary>
    public static PretrainedEncoderPackage Package(string row) => row switch
    {
        Rows.EncoderLogRegMiniLM => PretrainedEncoderPackage.MiniLM,
        Rows.EncoderLogRegArcticXs => PretrainedEncoderPackage.ArcticXs,
        _ => throw new ArgumentException($"'{row}' is not an encoder baseline row."),
    };

    /// <summary>The config part of the row's results key: encoder package, pooling and the head's settings.</summary>
    public static string ConfigKey(string row)
    {
        var p = Package(row);
        var text = FormattableString.Invariant($"encoder-logreg-v1|{p.PackageId}|{p.Version}|{p.Pooling}|unit-norm|pair-uv|lbfgs-l1-0-l2-{L2}");
        // The encoder's token limit, when it is not the 256 every row was first measured with (arctic-embed-xs reads 512
        // since the encoder takes the package's own limit): its rows measured at 256 must not pass for these.
        if (p.MaxSequenceLength != 256) text += FormattableString.Invariant($"|max-tokens {p.MaxSequenceLength}");
        return KeyHash.Of(text);
    }

    /// <summary>
    /// Texts embedded per call: 16 of the encoder's batches of 32, so the batches, and the numbers, are those of one call
    /// over all the texts, and the cancellation is checked and progress reported between them (one call over BoolQ's
    /// 3,270 passages took 17 to 37 minutes without a line, and Ctrl+C or SIGTERM waited for all of it).
    /// </summary>
    private const int EmbedChunk = 512;

    /// <summary>Trains the head on <paramref name="task"/>'s training split and scores its evaluation split.</summary>
    /// <param name="progress">Texts embedded so far, between chunks of <see cref="EmbedChunk"/>.</param>
    /// <param name="cancellation">Checked between chunks of texts embedded.</param>
    public static RowResult Run(FewShotTask task, string row, int seed, IProgress<TrainingProgress>? progress = null, CancellationToken cancellation = default)
    {
        var encoder = Encoders.GetOrAdd(row, r => BertSentenceEncoder.Load(new MLContext(seed: 1), Package(r)));
        var labelIndex = task.Labels.Select((l, i) => (l, i)).ToDictionary(p => p.l, p => p.i, StringComparer.Ordinal);
        var ml = new MLContext(seed: seed);
        IDataView View(IReadOnlyList<TextPairRow> rows, string split) => ml.Data.LoadFromEnumerable(
            Featurise(encoder, row, task.IsPair, rows.Where(r => labelIndex.ContainsKey(r.Label)).ToList(), labelIndex, split, progress, cancellation), SchemaFor(encoder.Dimension * (task.IsPair ? 4 : 1)));

        var trainer = ml.Transforms.Conversion.MapValueToKey(LabelKey, nameof(FeatureRow.Label))
            .Append(ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy(new LbfgsMaximumEntropyMulticlassTrainer.Options
            {
                L1Regularization = 0, L2Regularization = L2, LabelColumnName = LabelKey, FeatureColumnName = nameof(FeatureRow.Features),
            }));
        var model = trainer.Fit(View(task.Train, "train"));
        var test = Score(ml, model, View(task.Test, "test"), task.Labels.Count);
        double? devAccuracy = task.Dev.Count > 0 ? Score(ml, model, View(task.Dev, "dev"), task.Labels.Count).Accuracy : null;
        long headParameters = (encoder.Dimension * (task.IsPair ? 4L : 1L) + 1) * task.Labels.Count;
        return new RowResult
        {
            Accuracy = test.Accuracy, MacroF1 = test.MacroF1, PositiveF1 = test.PositiveF1, TestRows = test.Rows,
            StudentParameters = encoder.ParameterCount + headParameters, FewShotDevAccuracy = devAccuracy,
            Notes = FormattableString.Invariant(
                $"frozen {Package(row).PackageId} {Package(row).Version} ({encoder.Pooling} pooling, unit norm, {encoder.MaxTokens} tokens) + LbfgsMaximumEntropy (l1 0, l2 {L2}); {headParameters:N0} trained parameters"),
        };
    }

    private static ClassificationScores Score(MLContext ml, ITransformer model, IDataView data, int labelCount)
    {
        var scored = model.Transform(data);
        // A predicted key's value is the label index it was mapped from (the float Label column).
        var gold = scored.GetColumn<float>(nameof(FeatureRow.Label)).Select(l => (int)l).ToList();
        var predicted = scored.GetColumn<uint>("PredictedLabel").ToList();
        var keyValues = default(VBuffer<float>);
        scored.Schema["PredictedLabel"].GetKeyValues(ref keyValues);
        var values = keyValues.DenseValues().ToArray();
        return ClassificationScores.FromPredictions(gold, predicted.Select(k => (int)values[k - 1]).ToList(), labelCount);
    }

    // A list, not an iterator: ML.NET would embed inside its own cursors, where a cancellation is not this method's to raise.
    private static List<FeatureRow> Featurise(BertSentenceEncoder encoder, string row, bool pair, IReadOnlyList<TextPairRow> rows, Dictionary<string, int> labelIndex,
        string split, IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var first = Embed(encoder, row, rows.Select(r => r.Text).ToList(), $"Embed {split}{(pair ? ", first texts" : "")}", progress, cancellation);
        var second = pair ? Embed(encoder, row, rows.Select(r => r.Text2).ToList(), $"Embed {split}, second texts", progress, cancellation) : null;
        var features = new List<FeatureRow>(rows.Count);
        for (int i = 0; i < rows.Count; i++)
        {
            var vector = first[i];
            if (second is not null)
            {
                var (u, v) = (first[i], second[i]);
                vector = [.. u, .. v, .. u.Zip(v, (a, b) => Math.Abs(a - b)), .. u.Zip(v, (a, b) => a * b)];
            }
            features.Add(new FeatureRow { Label = labelIndex[rows[i].Label], Features = vector });
        }
        return features;
    }

    /// <summary>Embeddings by text, cached across seeds (the evaluation split is the same for every seed).</summary>
    private static float[][] Embed(BertSentenceEncoder encoder, string row, List<string> texts, string stage, IProgress<TrainingProgress>? progress, CancellationToken cancellation)
    {
        var missing = texts.Where(t => !Embeddings.ContainsKey((row, t))).Distinct(StringComparer.Ordinal).ToList();
        for (int start = 0; start < missing.Count; start += EmbedChunk)
        {
            cancellation.ThrowIfCancellationRequested();
            progress?.Report(new TrainingProgress(stage, start, missing.Count, new Dictionary<string, double>()));
            var chunk = missing.GetRange(start, Math.Min(EmbedChunk, missing.Count - start));
            var vectors = encoder.Embed(chunk);
            for (int i = 0; i < chunk.Count; i++) Embeddings[(row, chunk[i])] = vectors[i];
        }
        return texts.Select(t => Embeddings[(row, t)]).ToArray();
    }

    private static SchemaDefinition SchemaFor(int dimension)
    {
        var schema = SchemaDefinition.Create(typeof(FeatureRow));
        schema[nameof(FeatureRow.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, dimension);
        return schema;
    }

    private sealed class FeatureRow
    {
        public float Label { get; set; }
        public float[] Features { get; set; } = [];
    }
}
