using Microsoft.ML.Runtime;
using RetriKT.MLNet;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using ExtractorDefaults = RetriKT.MLNet.Knowledge.Extraction.KnowledgeExtractorOptions.Defaults;
using PromptDefaults = RetriKT.MLNet.SoftPrompt.SoftPromptPpoOptions.Defaults;

// ML.NET's convention: catalog extensions live in Microsoft.ML, so `using Microsoft.ML;` alone reaches them.
namespace Microsoft.ML;

/// <summary>The training assembly's trainers on <c>mlContext.RetriKT()</c> (soft prompts + PPO, knowledge extraction).</summary>
public static class RetriKTTrainingCatalog
{
    private static IHostEnvironment Env(RetriKTCatalog catalog) => (catalog ?? throw new ArgumentNullException(nameof(catalog))).Environment;

    /// <summary>
    /// RetriKT steps 1–2: tunes per-label soft prompts for the frozen teacher at <paramref name="teacherPath"/> on the
    /// few-shot data (supervised, then PPO with the default fidelity + diversity reward). Settings not named here take
    /// the defaults of <see cref="SoftPromptPpoOptions"/>.
    /// </summary>
    /// <param name="catalog">The RetriKT catalog (<c>mlContext.RetriKT()</c>).</param>
    /// <param name="teacherPath">Teacher checkpoint: HF directory (LLaMA family or GPT-2) or llama2.c .bin.</param>
    /// <param name="template">The task template, for example <see cref="TaskTemplates.Sst2"/>.</param>
    /// <param name="labelColumnName">Label column (String or key with text values).</param>
    /// <param name="promptTokens">Virtual tokens per label prompt.</param>
    /// <param name="supervisedEpochs">Stage-1 epochs.</param>
    /// <param name="ppoSteps">Stage-2 PPO iterations (0 skips PPO).</param>
    public static SoftPromptPpoTrainer SoftPromptPpoTrainer(this RetriKTCatalog catalog, string teacherPath, TaskTemplate template,
        string labelColumnName = PromptDefaults.LabelColumnName, int promptTokens = PromptDefaults.PromptTokens,
        int supervisedEpochs = PromptDefaults.SupervisedEpochs, int ppoSteps = PromptDefaults.PpoSteps)
        => new(Env(catalog), new SoftPromptPpoOptions
        {
            TeacherPath = teacherPath,
            Template = template,
            LabelColumnName = labelColumnName,
            PromptTokens = promptTokens,
            SupervisedEpochs = supervisedEpochs,
            PpoSteps = ppoSteps,
        });

    /// <summary>Soft prompt tuning + PPO with all options.</summary>
    public static SoftPromptPpoTrainer SoftPromptPpoTrainer(this RetriKTCatalog catalog, SoftPromptPpoOptions options) => new(Env(catalog), options);

    /// <summary>
    /// RetriKT step 3: generates <paramref name="samplesPerLabel"/> filtered samples per label with the tuned
    /// <paramref name="softPrompts"/>, each with the teacher's soft label; the few-shot examples join with gold labels.
    /// Settings not named here take the defaults of <see cref="KnowledgeExtractorOptions"/>.
    /// </summary>
    /// <param name="catalog">The RetriKT catalog of an MLContext (<c>mlContext.RetriKT()</c>).</param>
    /// <param name="softPrompts">The tuned soft prompts (the fitted <see cref="SoftPromptPpoTrainer(RetriKTCatalog, SoftPromptPpoOptions)"/>), which hold the teacher.</param>
    /// <param name="samplesPerLabel">Kept samples per label, after the filters.</param>
    /// <param name="labelColumnName">Label column of the few-shot data passed to Fit.</param>
    public static KnowledgeExtractor KnowledgeExtractor(this RetriKTCatalog catalog, SoftPromptTransformer softPrompts,
        int samplesPerLabel = ExtractorDefaults.SamplesPerLabel, string labelColumnName = ExtractorDefaults.LabelColumnName)
        => new(Env(catalog), new KnowledgeExtractorOptions { SoftPrompts = softPrompts, SamplesPerLabel = samplesPerLabel, LabelColumnName = labelColumnName });

    /// <summary>Knowledge extraction with all options.</summary>
    public static KnowledgeExtractor KnowledgeExtractor(this RetriKTCatalog catalog, KnowledgeExtractorOptions options) => new(Env(catalog), options);
}
