using RetriKT.MLNet.Common;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

// The student built on a frozen pretrained encoder (Options.Backbone). See docs/ENCODERS.md.
public sealed partial class RetrievalClassifierTrainer
{
    private static void CheckBackbone(Options options)
    {
        var source = options.Backbone!;
        if (string.IsNullOrWhiteSpace(source))
            throw new ArgumentOutOfRangeException(nameof(options), "Backbone is empty; give a SentenceTransformers.* package DLL or a Hugging Face BERT directory, or null for the tiny student.");
        if (!File.Exists(source) && !Directory.Exists(source))
            throw new ArgumentOutOfRangeException(nameof(options), $"Backbone '{source}' not found: expected a SentenceTransformers.* package DLL or a Hugging Face BERT directory.");
        if (options.VocabularyPath is not null)
            throw new ArgumentOutOfRangeException(nameof(options), $"VocabularyPath ('{options.VocabularyPath}') must be null with a Backbone: the backbone brings its own vocabulary.");
        if (options.Dropout is < 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(options), $"Dropout must be in [0, 1), found {options.Dropout}.");
        if (options.MaxLength < 3)
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxLength must be at least 3 ([CLS], a token, [SEP]), found {options.MaxLength}.");
    }

    /// <summary>
    /// Trains a student on a frozen pretrained encoder: every distinct store text is embedded once (managed inference,
    /// the very computation the runtime repeats for a query), then only the projection, head and τ train on those
    /// embeddings, with the tiny student's objective and schedule.
    /// </summary>
    private RetrievalClassifierTransformer FitWithBackbone(KnowledgeStore store, ComponentHost host)
    {
        var (backbone, vocabulary) = StudentBackbone.Load(_options.Backbone!);
        var shape = backbone.Config;
        if (_options.MaxLength > shape.MaxPositions)
            throw new ArgumentOutOfRangeException(nameof(Options.MaxLength), $"MaxLength {_options.MaxLength} exceeds the backbone's {shape.MaxPositions} positions ({backbone.Description}).");
        var tokenizer = new TextTokenizingTransformer(_env, _options.TextColumnName, _options.SecondTextColumnName, "TokenIds", _options.MaxLength, vocabulary);
        int truncated = 0;
        var ids = store.Entries.Select(e => { var r = tokenizer.Encode(e.Text!, e.Text2, out bool t); if (t) truncated++; return r; }).ToList();
        if (truncated > 0) host.Warning($"{truncated} of {store.Count} store texts are longer than MaxLength = {_options.MaxLength} tokens and were truncated.");

        int d = backbone.Dimension, labels = store.LabelCount;
        var config = new StudentConfig(vocabulary.Count, d, Layers: 0, Heads: 1, FeedForwardSize: d, _options.MaxLength, StudentPooling.Mean, labels, _options.Dropout);
        long parameters = backbone.ParameterCount + BackboneStudentNetwork.TrainedParameterCount(d, labels);
        host.Info($"Student on a frozen backbone: {backbone.Description} ({shape.NumLayers} layers, hidden {d}, {backbone.Pooling} pooling); " +
                  $"{parameters:N0} parameters ({backbone.ParameterCount:N0} frozen)" +
                  (_options.TeacherParameterCount is long teacher ? $" = {100.0 * parameters / teacher:G3}% of the teacher's {teacher:N0}." : "."));

        var features = new BackboneFeatures(backbone);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var storeFeatures = features.Embed(ids, host);
        host.Info($"Backbone embedded {features.Count:N0} distinct store texts in {clock.Elapsed.TotalSeconds:F0} s.");

        var device = host.ResolveDevice();
        var model = new BackboneHeadModel(d, labels, _options.Dropout, _options.InitialTemperature);
        try
        {
            using (var generator = new Generator((ulong)host.Seed)) model.Initialize(generator);
            model.to(device);
            bool retrieval = _options.UseRetrieval;
            var settings = new TrainingSettings(_options.Epochs, _options.BatchSize, _options.LearningRate, _options.WeightDecay,
                retrieval ? _options.RetrievalLossWeight : 0, _options.ContrastiveLossWeight, _options.ContrastiveTemperature,
                _options.NeighborCount, _options.LearnTemperature && retrieval, host.Seed);
            using var featureTensor = torch.tensor(storeFeatures, [store.Count, d], device: device);
            BackboneTraining.Train(model, featureTensor, store.SoftLabels.ToArray(), labels, settings, device, host);

            float[] embeddings;
            using (var memory = BackboneTraining.EmbedAll(model, featureTensor))
            using (var cpu = memory.cpu())
                embeddings = cpu.data<float>().ToArray();
            store = store.WithEmbeddings(embeddings, d);

            var lexical = TermMatchIndex(store, ids, vocabulary, host);
            Func<IReadOnlyList<int[]>, (Tensor Pooled, Tensor HeadProbabilities)> scorer = rows =>
            {
                model.eval();
                var pooled = model.Encode(torch.tensor(features.Embed(rows, host), [rows.Count, d], device: device));
                return (pooled, model.Head(pooled).softmax(-1));
            };
            return Finish(config, model.ToWeights(), tokenizer, store, lexical, model.TemperatureValue, scorer, host, device, backbone);
        }
        finally
        {
            model.Dispose(); // the transformer holds the weights in managed memory
        }
    }
}

/// <summary>
/// The frozen backbone's unit-length embeddings of token rows, each distinct row computed once (rows in parallel),
/// so the store, the validation rows and any repeat cost one encoder pass per distinct text.
/// </summary>
internal sealed class BackboneFeatures(StudentBackbone backbone)
{
    private readonly Dictionary<int[], float[]> _cache = new(new SequenceComparer());

    /// <summary>Distinct rows embedded so far.</summary>
    public int Count => _cache.Count;

    /// <summary>Row-major [rows, D] embeddings of <paramref name="rows"/>.</summary>
    public float[] Embed(IReadOnlyList<int[]> rows, ComponentHost host)
    {
        int d = backbone.Dimension;
        var missing = rows.Where(r => !_cache.ContainsKey(r)).Distinct(new SequenceComparer()).ToArray();
        var computed = new float[missing.Length][];
        int done = 0;
        Parallel.For(0, missing.Length, i =>
        {
            if ((i & 63) == 0) host.CheckAlive();
            var e = new float[d];
            backbone.Embed(missing[i], e);
            computed[i] = e;
            int n = Interlocked.Increment(ref done);
            if (n % 1024 == 0) host.Info($"Backbone: {n:N0} of {missing.Length:N0} texts embedded.");
        });
        for (int i = 0; i < missing.Length; i++) _cache[missing[i]] = computed[i];
        var result = new float[rows.Count * d];
        for (int i = 0; i < rows.Count; i++) _cache[rows[i]].CopyTo(result, i * d);
        return result;
    }

    private sealed class SequenceComparer : IEqualityComparer<int[]>
    {
        public bool Equals(int[]? x, int[]? y) => x.AsSpan().SequenceEqual(y);
        public int GetHashCode(int[] ids)
        {
            var hash = new HashCode();
            foreach (var id in ids) hash.Add(id);
            return hash.ToHashCode();
        }
    }
}
