using RetriKT.MLNet.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Student;

/// <summary>
/// What a student with a frozen pretrained backbone trains: a projection of the backbone's unit-length embedding,
/// initialised to the identity (retrieval starts from the encoder's own similarity and moves only where the retrieval
/// loss asks), a linear head and the retrieval temperature τ. The runtime's <see cref="BackboneStudentNetwork"/> is the
/// same computation. Inputs are cached backbone embeddings, so an epoch costs matrix products of [N, D], not N
/// forward passes of the encoder.
/// </summary>
internal sealed class BackboneHeadModel : nn.Module
{
    private readonly Linear proj, head;
    private readonly Parameter log_temperature;
    private readonly SeededDropout _dropout;

    public BackboneHeadModel(int dimension, int labels, double dropout, double initialTemperature) : base(nameof(BackboneHeadModel))
    {
        _dropout = new SeededDropout(dropout);
        proj = nn.Linear(dimension, dimension);
        head = nn.Linear(dimension, labels);
        log_temperature = nn.Parameter(torch.tensor(new[] { (float)Math.Log(initialTemperature) })); // named StudentWeights.TemperatureName
        RegisterComponents();
    }

    /// <summary>Generator used by dropout while training (null: global RNG).</summary>
    public Generator? DropoutGenerator { get => _dropout.Generator; set => _dropout.Generator = value; }

    /// <summary>Projection = identity, zero biases, head N(0, 0.02) from <paramref name="generator"/>.</summary>
    public void Initialize(Generator generator)
    {
        using var _ = torch.no_grad();
        using (var eye = torch.eye(proj.weight!.shape[0])) proj.weight.copy_(eye);
        proj.bias!.zero_();
        head.weight!.normal_(0, 0.02, generator);
        head.bias!.zero_();
    }

    /// <summary>Retrieval temperature τ = exp(log_temperature), clamped to [0.01, 2] (as the tiny student's).</summary>
    public Tensor Temperature() => log_temperature.exp().clamp(0.01, 2.0);

    public double TemperatureValue
    {
        get { using var _ = torch.no_grad(); using var t = Temperature(); return t.item<float>(); }
    }

    /// <summary>[B, D] pooled embedding (not normalised) from [B, D] backbone embeddings.</summary>
    public Tensor Encode(Tensor features) => proj.forward(_dropout.Apply(features, training));

    /// <summary>[B, K] label logits from pooled embeddings.</summary>
    public Tensor Head(Tensor pooled) => head.forward(_dropout.Apply(pooled, training));

    /// <summary>The trained weights for the runtime (every state entry but τ, float32 on the CPU).</summary>
    public StudentWeights ToWeights()
    {
        using var _ = torch.no_grad();
        var tensors = new List<NamedTensor>();
        foreach (var (name, t) in state_dict())
        {
            if (name == StudentWeights.TemperatureName) continue;
            using var cpu = t.detach().to(ScalarType.Float32, torch.CPU).contiguous();
            tensors.Add(new NamedTensor(name, cpu.shape.ToArray(), cpu.data<float>().ToArray()));
        }
        return new StudentWeights(tensors);
    }
}

/// <summary>
/// Training of a <see cref="BackboneHeadModel"/> on cached backbone embeddings, with the tiny student's objective
/// (<see cref="RetrievalTraining"/>): loss = KL(t ‖ p_head) + α·KL(t ‖ p_knn) + β·InfoNCE(two dropout views), the
/// retrieval memory re-embedded through the projection every epoch, a query never retrieving itself.
/// </summary>
internal static class BackboneTraining
{
    public static void Train(BackboneHeadModel model, Tensor features, float[] softLabelValues, int labels, TrainingSettings settings, Device device, ComponentHost host)
    {
        int n = (int)features.shape[0];
        var random = new Random(settings.Seed);
        using var generator = new Generator((ulong)settings.Seed);
        model.DropoutGenerator = generator;
        var temperature = model.get_parameter(StudentWeights.TemperatureName)!;
        try
        {
            var parameters = model.named_parameters()
                .Where(p => settings.LearnTemperature || p.name != StudentWeights.TemperatureName)
                .Select(p => p.parameter).ToList();
            if (!settings.LearnTemperature) temperature.requires_grad = false;
            using var optimizer = torch.optim.AdamW(parameters, settings.LearningRate, weight_decay: settings.WeightDecay);
            using var softLabels = torch.tensor(softLabelValues, [n, labels], device: device);
            int stepsPerEpoch = (n + settings.BatchSize - 1) / settings.BatchSize;
            long totalSteps = (long)stepsPerEpoch * settings.Epochs, step = 0;
            bool retrieval = settings.RetrievalLossWeight > 0 && n > 1;
            int k = Math.Min(settings.NeighborCount, n - 1);
            var order = Enumerable.Range(0, n).ToArray();
            for (int epoch = 1; epoch <= settings.Epochs; epoch++)
            {
                host.CheckAlive();
                using var memory = retrieval ? EmbedAll(model, features) : null;
                model.train();
                random.Shuffle(order);
                double sumKd = 0, sumRet = 0, sumCon = 0;
                for (int start = 0; start < n; start += settings.BatchSize)
                {
                    using var scope = torch.NewDisposeScope();
                    var batch = order.AsSpan(start, Math.Min(settings.BatchSize, n - start)).ToArray();
                    var batchIndex = torch.tensor(batch.Select(i => (long)i).ToArray(), device: device);
                    var input = features.index_select(0, batchIndex);
                    var target = softLabels.index_select(0, batchIndex);
                    var targetEntropy = (target * target.clamp_min(1e-8f).log()).sum(-1);

                    var pooled = model.Encode(input);
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
                        var z2 = nn.functional.normalize(model.Encode(input), p: 2, dim: 1); // a second dropout view
                        var con = nn.functional.cross_entropy(z1.matmul(z2.t()) / settings.ContrastiveTemperature,
                            torch.arange(batch.Length, dtype: ScalarType.Int64, device: device));
                        loss = loss + con * settings.ContrastiveLossWeight;
                        sumCon += con.item<float>();
                    }
                    optimizer.zero_grad();
                    loss.backward();
                    nn.utils.clip_grad_norm_(parameters, 1.0);
                    double rate = settings.LearningRate * (1 - 0.9 * step / Math.Max(1, totalSteps - 1)); // as the tiny student's schedule
                    foreach (var group in optimizer.ParamGroups) group.LearningRate = rate;
                    optimizer.step();
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

    /// <summary>L2-normalised pooled embeddings [N, D] of all rows in eval mode, without gradient.</summary>
    public static Tensor EmbedAll(BackboneHeadModel model, Tensor features)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            using var pooled = model.Encode(features);
            return nn.functional.normalize(pooled, p: 2, dim: 1);
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
