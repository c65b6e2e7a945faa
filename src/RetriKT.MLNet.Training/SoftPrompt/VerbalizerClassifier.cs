using RetriKT.MLNet.Student;
using RetriKT.MLNet.Teacher;
using static TorchSharp.torch;

namespace RetriKT.MLNet.SoftPrompt;

/// <summary>
/// The teacher as a prompted classifier: for a sample, the teacher scores each label's verbalizer word at the
/// template's <c>{label}</c> slot; the label probabilities are the softmax of those log-likelihoods. Optionally
/// calibrated (contextual calibration, Zhao et al. 2021: divide by the probabilities the teacher gives a content-free
/// input, then renormalise), which removes the teacher's prior preference for some label words. This is the
/// fidelity classifier of RetriKT's reward and the source of the knowledge store's soft labels.
/// </summary>
public sealed class VerbalizerClassifier : ILabelScorer
{
    private readonly TeacherModel _teacher;
    private readonly TaskTemplate _template;
    private readonly string[] _words;
    // Each label word's token when every word is one token (then one pass per sample scores them all), else null.
    private readonly int[]? _wordTokens;
    private readonly double[]? _calibration;

    /// <summary>Creates the classifier for <paramref name="labels"/> (order = probability order).</summary>
    public VerbalizerClassifier(TeacherModel teacher, TaskTemplate template, IReadOnlyList<string> labels, bool calibrate = true, int batchSize = TeacherModel.DefaultScoringBatch)
        : this(teacher, template, labels, calibrate, batchSize, rowPerWord: false)
    {
    }

    /// <summary>
    /// As the public constructor; <paramref name="rowPerWord"/> scores every label word as its own row even when all are
    /// single tokens (the general path, for parity checks and the benchmark).
    /// </summary>
    internal VerbalizerClassifier(TeacherModel teacher, TaskTemplate template, IReadOnlyList<string> labels, bool calibrate, int batchSize, bool rowPerWord)
    {
        _teacher = teacher ?? throw new ArgumentNullException(nameof(teacher));
        _template = template ?? throw new ArgumentNullException(nameof(template));
        ArgumentNullException.ThrowIfNull(labels);
        template.Validate(labels);
        if (teacher.Tokenizer is null) throw new InvalidOperationException("The verbalizer classifier needs a teacher with a tokenizer.");
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batchSize must be positive, found {batchSize}.");
        Labels = labels.ToArray();
        BatchSize = batchSize;
        _words = Labels.Select(l => template.Verbalizer[l]).ToArray();
        // The words as they read after the prompt's text (no SentencePiece dummy-prefix space): what ScoreContinuations scores.
        bool afterText = template.ClassificationFormat.IndexOf("{label}", StringComparison.Ordinal) > 0;
        var encoded = _words.Select(w => teacher.Tokenizer.EncodeContinuation(w, afterText)).ToArray();
        if (!rowPerWord && encoded.All(e => e.Length == 1)) _wordTokens = encoded.Select(e => e[0]).ToArray();
        if (calibrate)
        {
            var contentFree = LogProbabilities([("N/A", template.IsPair ? "N/A" : null)])[0];
            _calibration = contentFree.Select(Math.Exp).ToArray();
        }
    }

    /// <summary>Labels, in probability order.</summary>
    public IReadOnlyList<string> Labels { get; }

    /// <summary>Rows per teacher forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>Whether contextual calibration is applied.</summary>
    public bool Calibrated => _calibration is not null;

    /// <inheritdoc/>
    public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => Probabilities(samples, null, default);

    float[][] ILabelScorer.Probabilities(IReadOnlyList<(string Text, string? Text2)> samples, CancellationToken cancellation) => Probabilities(samples, null, cancellation);

    /// <summary>
    /// Label probabilities per sample (rows sum to 1), as <see cref="ILabelScorer.Probabilities(IReadOnlyList{ValueTuple{string, string}})"/>
    /// gives them, for a long scan: <paramref name="progress"/> is called after each teacher forward pass with the samples
    /// scored so far and their total, and <paramref name="cancellation"/> is checked before each pass. The batches, their
    /// order and the probabilities are the same with or without them.
    /// </summary>
    public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples, Action<int, int>? progress, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(samples);
        var logp = LogProbabilities(samples, progress, cancellation);
        var result = new float[samples.Count][];
        for (int i = 0; i < samples.Count; i++)
        {
            var p = logp[i].Select(Math.Exp).ToArray();
            if (_calibration is not null)
                for (int k = 0; k < p.Length; k++) p[k] /= Math.Max(_calibration[k], 1e-12);
            double sum = p.Sum();
            result[i] = p.Select(x => (float)(x / sum)).ToArray();
        }
        return result;
    }

    /// <summary>
    /// Index of the most probable label per sample. <paramref name="progress"/> receives the samples scored so far and their
    /// total after each teacher forward pass; <paramref name="cancellation"/> is checked before each pass.
    /// </summary>
    public int[] Predict(IReadOnlyList<(string Text, string? Text2)> samples, Action<int, int>? progress = null, CancellationToken cancellation = default)
        => Probabilities(samples, progress, cancellation).Select(p => RetrievalMix.ArgMax(p)).ToArray();

    /// <summary>Whether every label word is one teacher token, so a sample's labels are scored in one pass.</summary>
    public bool SingleTokenWords => _wordTokens is not null;

    /// <summary>Uncalibrated log-probabilities over the labels (log-softmax of the label words' log-likelihoods).</summary>
    private double[][] LogProbabilities(IReadOnlyList<(string Text, string? Text2)> samples, Action<int, int>? progress = null, CancellationToken cancellation = default)
    {
        if (_wordTokens is not null)
        {
            var classificationPrefixes = samples.Select(s => _template.ClassificationParts(s.Text, s.Text2).Prefix).ToList();
            return _teacher.ScoreNextTokens(classificationPrefixes, _wordTokens, BatchSize, progress, cancellation).Select(Normalize).ToArray();
        }
        int labels = _words.Length;
        var prefixes = new List<string>(samples.Count * labels);
        var continuations = new List<string>(samples.Count * labels);
        foreach (var (text, text2) in samples)
        {
            var (prefix, _) = _template.ClassificationParts(text, text2);
            foreach (var word in _words) { prefixes.Add(prefix); continuations.Add(word); }
        }
        // One row per (sample, label word): the rows scored, counted in samples, reach the sample count at the end.
        Action<int, int>? rowProgress = progress is null ? null : (done, _) => progress(done / labels, samples.Count);
        var scores = _teacher.ScoreContinuations(prefixes, continuations, batchSize: BatchSize, progress: rowProgress, cancellation: cancellation);
        return Enumerable.Range(0, samples.Count).Select(i => Normalize(scores.AsSpan(i * labels, labels).ToArray())).ToArray();
    }

    /// <summary>Log-softmax over the label words' log-likelihoods.</summary>
    private static double[] Normalize(double[] row)
    {
        double max = row.Max();
        double log = max + Math.Log(row.Sum(x => Math.Exp(x - max)));
        return row.Select(x => x - log).ToArray();
    }
}
