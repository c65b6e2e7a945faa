using RetriKT.MLNet.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>
/// The cached inputs of a <see cref="BackboneHeadModel"/>, one per store entry: the frozen backbone's unit-length
/// embeddings ([N, D], on the device), or, when top layers train, each text's token states entering the first
/// trainable layer (row-major [t, H] on the CPU, padded per batch).
/// </summary>
internal sealed class BackboneInputs : IDisposable
{
    private readonly Tensor? _features;
    private readonly IReadOnlyList<float[]>? _states;
    private readonly int _hidden;
    private readonly Device _device;

    private BackboneInputs(Tensor? features, IReadOnlyList<float[]>? states, int count, int hidden, Device device)
    {
        _features = features;
        _states = states;
        Count = count;
        _hidden = hidden;
        _device = device;
    }

    /// <summary>Frozen backbone: row-major [rows, D] embeddings.</summary>
    public static BackboneInputs Embeddings(float[] values, int rows, int dimension, Device device)
        => new(torch.tensor(values, [rows, dimension], device: device), null, rows, dimension, device);

    /// <summary>Trainable top layers: per row, the [t, H] token states entering them.</summary>
    public static BackboneInputs States(IReadOnlyList<float[]> states, int hidden, Device device) => new(null, states, states.Count, hidden, device);

    public int Count { get; }

    /// <summary>[B, D] pooled embeddings (not normalised) of <paramref name="rows"/>, in the model's current mode.</summary>
    public Tensor Encode(BackboneHeadModel model, long[] rows)
    {
        if (_features is not null)
        {
            using var index = torch.tensor(rows, device: _device);
            return model.Encode(_features.index_select(0, index));
        }
        int b = rows.Length, t = rows.Max(r => _states![(int)r].Length / _hidden), h = _hidden;
        var states = new float[b * t * h];
        var mask = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            var row = _states![(int)rows[i]];
            row.CopyTo(states, i * t * h);
            mask.AsSpan(i * t, row.Length / h).Fill(1);
        }
        using var scope = torch.NewDisposeScope();
        var pooled = model.Encode(torch.tensor(states, [b, t, h], device: _device), torch.tensor(mask, [b, t], device: _device));
        return pooled.MoveToOuterDisposeScope();
    }

    /// <summary>L2-normalised pooled embeddings [N, D] of all rows in eval mode, without gradient (the retrieval memory).</summary>
    public Tensor EmbedAll(BackboneHeadModel model, int batchSize = 256)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            var parts = new List<Tensor>();
            if (_features is not null) batchSize = Count; // embeddings: one product over the whole store
            try
            {
                for (int start = 0; start < Count; start += batchSize)
                {
                    var rows = Enumerable.Range(start, Math.Min(batchSize, Count - start)).Select(i => (long)i).ToArray();
                    using var pooled = Encode(model, rows);
                    parts.Add(nn.functional.normalize(pooled, p: 2, dim: 1));
                }
                return torch.cat(parts, 0);
            }
            finally
            {
                foreach (var p in parts) p.Dispose();
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    public void Dispose() => _features?.Dispose();
}

/// <summary>
/// Training of a <see cref="BackboneHeadModel"/> on cached inputs with the tiny student's objective
/// (<see cref="RetrievalTraining"/>): loss = KL(t ‖ p_head) + α·KL(t ‖ p_knn) + β·InfoNCE(two dropout views), the
/// retrieval memory re-embedded every epoch, a query never retrieving itself, AdamW with linear decay to 10 %.
/// Trainable backbone layers get their own optimizer at the backbone learning rate, on the same schedule.
/// </summary>
internal static class BackboneTraining
{
    public static void Train(BackboneHeadModel model, BackboneInputs inputs, float[] softLabelValues, int labels, TrainingSettings settings,
        double backboneLearningRate, Device device, ComponentHost host)
    {
        int n = inputs.Count;
        var random = new Random(settings.Seed);
        using var generator = new Generator((ulong)settings.Seed);
        model.DropoutGenerator = generator;
        var temperature = model.get_parameter(StudentWeights.TemperatureName)!;
        var layerParameters = model.LayerParameters.ToList();
        try
        {
            var parameters = model.named_parameters()
                .Where(p => (settings.LearnTemperature || p.name != StudentWeights.TemperatureName) && !p.name.StartsWith("layer.", StringComparison.Ordinal))
                .Select(p => p.parameter).ToList();
            if (!settings.LearnTemperature) temperature.requires_grad = false;
            using var optimizer = torch.optim.AdamW(parameters, settings.LearningRate, weight_decay: settings.WeightDecay);
            using var layerOptimizer = layerParameters.Count > 0 ? torch.optim.AdamW(layerParameters, backboneLearningRate, weight_decay: settings.WeightDecay) : null;
            using var softLabels = torch.tensor(softLabelValues, [n, labels], device: device);
            int stepsPerEpoch = (n + settings.BatchSize - 1) / settings.BatchSize;
            long totalSteps = (long)stepsPerEpoch * settings.Epochs, step = 0;
            bool retrieval = settings.RetrievalLossWeight > 0 && n > 1;
            int k = Math.Min(settings.NeighborCount, n - 1);
            var order = Enumerable.Range(0, n).ToArray();
            for (int epoch = 1; epoch <= settings.Epochs; epoch++)
            {
                host.CheckAlive();
                using var memory = retrieval ? inputs.EmbedAll(model) : null;
                model.train();
                random.Shuffle(order);
                double sumKd = 0, sumRet = 0, sumCon = 0;
                for (int start = 0; start < n; start += settings.BatchSize)
                {
                    using var scope = torch.NewDisposeScope();
                    var batch = order.AsSpan(start, Math.Min(settings.BatchSize, n - start)).ToArray();
                    var rows = batch.Select(i => (long)i).ToArray();
                    using var batchIndex = torch.tensor(rows, device: device);
                    var target = softLabels.index_select(0, batchIndex);
                    var targetEntropy = (target * target.clamp_min(1e-8f).log()).sum(-1);

                    var pooled = inputs.Encode(model, rows);
                    var kd = (targetEntropy - (target * model.Head(pooled).log_softmax(-1)).sum(-1)).mean();
                    var loss = kd;
                    sumKd += kd.item<float>();
                    if (retrieval)
                    {
                        var sims = nn.functional.normalize(pooled, p: 2, dim: 1).matmul(memory!.t());
                        var self = torch.zeros(sims.shape, dtype: ScalarType.Bool, device: device);
                        for (int i = 0; i < batch.Length; i++) self[i, batch[i]] = true;
                        var (values, indices) = sims.masked_fill(self, -1e4f).topk(k, dim: 1); // a query never retrieves itself
                        var knn = RetrievalTraining.Knn(values, indices, model.Temperature(), softLabels);
                        var ret = (targetEntropy - (target * knn.clamp_min(1e-8f).log()).sum(-1)).mean();
                        loss = loss + ret * settings.RetrievalLossWeight;
                        sumRet += ret.item<float>();
                    }
                    if (settings.ContrastiveLossWeight > 0 && batch.Length > 1)
                    {
                        var z1 = nn.functional.normalize(pooled, p: 2, dim: 1);
                        var z2 = nn.functional.normalize(inputs.Encode(model, rows), p: 2, dim: 1); // a second dropout view
                        var con = nn.functional.cross_entropy(z1.matmul(z2.t()) / settings.ContrastiveTemperature,
                            torch.arange(batch.Length, dtype: ScalarType.Int64, device: device));
                        loss = loss + con * settings.ContrastiveLossWeight;
                        sumCon += con.item<float>();
                    }
                    optimizer.zero_grad();
                    layerOptimizer?.zero_grad();
                    loss.backward();
                    nn.utils.clip_grad_norm_(parameters.Concat(layerParameters), 1.0);
                    double decay = 1 - 0.9 * step / Math.Max(1, totalSteps - 1); // as the tiny student's schedule
                    foreach (var group in optimizer.ParamGroups) group.LearningRate = settings.LearningRate * decay;
                    if (layerOptimizer is not null)
                        foreach (var group in layerOptimizer.ParamGroups) group.LearningRate = backboneLearningRate * decay;
                    optimizer.step();
                    layerOptimizer?.step();
                    step++;
                }
                var metrics = new Dictionary<string, double> { ["kd"] = sumKd / stepsPerEpoch, ["retrieval"] = sumRet / stepsPerEpoch, ["tau"] = model.TemperatureValue };
                if (settings.ContrastiveLossWeight > 0) metrics["contrastive"] = sumCon / stepsPerEpoch;
                host.Report("RetrievalClassifier", epoch, settings.Epochs, metrics);
            }
        }
        finally
        {
            model.DropoutGenerator = null;
            temperature.requires_grad = true;
            model.eval();
        }
    }
}
